// A model's include / exclude globs, with the rules of huggingface_hub's
// allow_patterns / ignore_patterns (Python fnmatch): '*' matches anything,
// '/' included; '?' one character; '[...]' a set ('[!...]' its complement);
// a pattern ending in '/' means everything below it. Empty include means
// every file; exclude wins. JavaScript glob libraries treat '*' and '/'
// differently, hence this small translation.
import { ModelCacheError } from "../errors.js";
import type { SourceFile } from "./artifact-source.js";

export function fnmatch(pattern: string): RegExp {
  const full = pattern.endsWith("/") ? `${pattern}*` : pattern;
  let regex = "";
  for (let i = 0; i < full.length; i++) {
    const c = full[i]!;
    if (c === "*") regex += ".*";
    else if (c === "?") regex += ".";
    else if (c === "[") {
      const end = full.indexOf("]", i + 2);
      if (end < 0) {
        regex += "\\[";
        continue;
      }
      let set = full.slice(i + 1, end);
      if (set.startsWith("!")) set = `^${set.slice(1)}`;
      regex += `[${set.replace(/\\/g, "\\\\")}]`;
      i = end;
    } else regex += c.replace(/[.+^${}()|\\\]]/g, "\\$&");
  }
  return new RegExp(`^${regex}$`, "s");
}

/** Whether a path passes the filters. */
export function passesFilters(path: string, include: string[], exclude: string[]): boolean {
  return (include.length === 0 || include.some((p) => fnmatch(p).test(path))) && !exclude.some((p) => fnmatch(p).test(path));
}

/** The files that pass the filters; failed_precondition naming them when none does. */
export function filterFiles<F extends SourceFile>(files: readonly F[], include: string[], exclude: string[]): F[] {
  if (include.length === 0 && exclude.length === 0) return [...files];
  const kept = files.filter((f) => passesFilters(f.path, include, exclude));
  if (kept.length === 0) {
    throw new ModelCacheError(
      "failed_precondition",
      `no file of the source passes the model's filters (include ${JSON.stringify(include)}, exclude ${JSON.stringify(exclude)}); change them with UpdateModel`,
    );
  }
  return kept;
}
