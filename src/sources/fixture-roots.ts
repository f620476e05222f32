// Which local directories a PullRequest's fixture_dir may name: only those
// inside an allowed root (--fixture-root, and the --fixture-dir default). The
// check is component-wise (/a/root-sibling is not inside /a/root) and runs in
// two steps, so that nothing outside the roots is ever looked at:
//  1. the path as written, with `..` resolved, must lie inside a root (no
//     file system access yet: a `..` trick or an absolute path elsewhere is
//     refused here, without learning whether it exists);
//  2. its real path (symbolic links resolved) must still lie inside a root,
//     so a link that leads out is refused too. For a path that does not
//     exist, the nearest existing ancestor is what must lie inside.
// Without any root, a fixture_dir is accepted only while the server is
// reachable from this host alone and nobody needs a token.
import { lstat, realpath } from "node:fs/promises";
import { dirname, isAbsolute, relative, resolve } from "node:path";
import { ModelCacheError, errorCode, quote } from "../errors.js";

export class FixtureRoots {
  private constructor(
    /** each root as written (resolved) and as its real path */
    private readonly roots: { given: string; real: string }[],
    /** no --fixture-root was given and the server may accept any directory */
    private readonly open: boolean,
  ) {}

  /**
   * Resolves each --fixture-root once, at start (one that does not exist is
   * an error); the --fixture-dir default is allowed too, once it exists.
   * Without any --fixture-root, every directory is allowed when `openWithoutRoots`.
   */
  static async resolve(roots: string[], fixtureDir: string | undefined, options: { openWithoutRoots: boolean }): Promise<FixtureRoots> {
    const resolved = await Promise.all(
      roots.map(async (root) => {
        const given = resolve(root);
        const real = await realpath(given).catch(() => {
          throw new ModelCacheError("failed_precondition", `--fixture-root ${quote(root)} does not exist: create it or leave it out`);
        });
        return { given, real };
      }),
    );
    if (fixtureDir !== undefined) {
      const real = await realpath(fixtureDir).catch(() => undefined);
      if (real !== undefined) resolved.push({ given: resolve(fixtureDir), real });
    }
    return new FixtureRoots(resolved, roots.length === 0 && options.openWithoutRoots);
  }

  get list(): string[] {
    return this.roots.map((r) => r.real);
  }

  /** The real path of a requested fixture_dir, if it is allowed; PERMISSION_DENIED naming the flag if not. */
  async admit(requested: string, field: string): Promise<string> {
    if (/[\u0000-\u001f\u007f]/.test(requested)) {
      throw new ModelCacheError("invalid_argument", `${field} ${quote(requested)} holds control characters: give a plain directory path`);
    }
    const written = resolve(requested);
    if (this.open) return written;
    if (this.roots.length === 0) {
      throw new ModelCacheError(
        "permission_denied",
        `${field} is refused: this server allows no local source directories (it requires tokens or listens beyond loopback); the operator can allow some with --fixture-root DIR`,
      );
    }
    const denied = () =>
      new ModelCacheError("permission_denied", `${field} ${quote(requested)} is outside every --fixture-root of this server: use a directory inside one of them (${this.list.map(quote).join(", ")})`);
    if (!this.roots.some((root) => inside(written, root.given) || inside(written, root.real))) throw denied();
    const real = await realOrNearest(written);
    if (!real || !this.roots.some((root) => inside(real.path, root.real))) throw denied();
    return real.exists ? real.path : written;
  }
}

/** Whether `path` is `root` or lies below it, component by component. */
function inside(path: string, root: string): boolean {
  const rel = relative(root, path);
  return rel === "" || (rel !== ".." && !rel.startsWith("../") && !isAbsolute(rel));
}

/**
 * The real path of `path`; when it does not exist, the real path of the
 * nearest entry on its way that does. Undefined when that cannot be told
 * (a symbolic link whose target is missing, a loop, no permission): the
 * caller refuses then, since where such a path leads cannot be judged.
 */
async function realOrNearest(path: string): Promise<{ path: string; exists: boolean } | undefined> {
  try {
    return { path: await realpath(path), exists: true };
  } catch (err) {
    if (errorCode(err) !== "ENOENT") return undefined;
  }
  for (let current = path; ; current = dirname(current)) {
    const entry = await lstat(current).catch((err: unknown) => (errorCode(err) === "ENOENT" ? null : undefined));
    if (entry === undefined) return undefined;
    if (entry !== null) {
      const real = await realpath(current).catch(() => undefined);
      return real === undefined ? undefined : { path: real, exists: false };
    }
    if (dirname(current) === current) return undefined;
  }
}
