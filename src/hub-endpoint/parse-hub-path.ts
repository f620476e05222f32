// Which route a request's path names, and its parts. Repository ids have one
// or two segments (`name` or `org/name`), so the keyword after them
// (`revision`, `tree`, `paths-info`, `resolve`) tells where the id ends; a
// keyword in second position is taken before one in first. Each segment is
// percent-decoded on its own (a revision such as refs%2Fpr%2F1 keeps its
// slash); file paths are checked by the handlers, never trusted here.
import { ModelCacheError } from "../errors.js";

export type HubRoute =
  | { route: "model_info"; repo: string; revision: string }
  | { route: "tree"; repo: string; revision: string; path: string }
  | { route: "paths_info"; repo: string; revision: string }
  | { route: "resolve"; repo: string; revision: string; path: string }
  | { route: "blob"; sha256: string };

/** The route of `method` and `pathname` (still percent-encoded), or undefined when none matches. */
export function parseHubPath(method: string, pathname: string): HubRoute | undefined {
  const blob = /^\/v2\/.+\/blobs\/sha256:([0-9a-f]{64})$/.exec(pathname);
  if (blob) return method === "GET" || method === "HEAD" ? { route: "blob", sha256: blob[1]! } : undefined;
  const segments = pathname.split("/").slice(1).map(decodeSegment);
  if (segments[0] === "api" && segments[1] === "models") {
    const rest = segments.slice(2);
    const at = keywordAt(rest, ["revision", "tree", "paths-info"]);
    if (at === undefined) {
      if (method !== "GET" || rest.length < 1 || rest.length > 2 || rest.some((s) => s === "")) return undefined;
      return { route: "model_info", repo: rest.join("/"), revision: "main" };
    }
    const repo = rest.slice(0, at).join("/");
    const revision = rest[at + 1];
    if (revision === undefined || revision === "") return undefined;
    const path = rest.slice(at + 2).join("/");
    switch (rest[at]) {
      case "revision":
        return method === "GET" && rest.length === at + 2 ? { route: "model_info", repo, revision } : undefined;
      case "tree":
        return method === "GET" ? { route: "tree", repo, revision, path: path.replace(/\/$/, "") } : undefined;
      default:
        return method === "POST" && rest.length === at + 2 ? { route: "paths_info", repo, revision } : undefined;
    }
  }
  const at = keywordAt(segments, ["resolve"]);
  if (at === undefined || (method !== "GET" && method !== "HEAD")) return undefined;
  const revision = segments[at + 1];
  const path = segments.slice(at + 2).join("/");
  if (revision === undefined || revision === "" || path === "") return undefined;
  return { route: "resolve", repo: segments.slice(0, at).join("/"), revision, path };
}

/** 2 or 1: where the keyword follows a repository id of that many (non-empty) segments. */
function keywordAt(segments: string[], keywords: string[]): number | undefined {
  for (const at of [2, 1]) {
    if (keywords.includes(segments[at] ?? "") && segments.slice(0, at).every((s) => s !== "")) return at;
  }
  return undefined;
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new ModelCacheError("invalid_argument", "the request path is not valid percent-encoded UTF-8");
  }
}
