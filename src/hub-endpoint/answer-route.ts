// Answers one parsed route: the domain functions' results as the hub's JSON,
// or a file sent from disk. The thin HTTP side of served-model.ts,
// model-info.ts, tree-entries.ts and open-served-file.ts.
import type { IncomingMessage, ServerResponse } from "node:http";
import { ModelCacheError } from "../errors.js";
import type { Runtime } from "../runtime.js";
import { modelInfo } from "./model-info.js";
import { awaitPulledFile, listingOfPull } from "./await-pulled-file.js";
import { type OpenedFile, openInstalledFile, openStoredContent } from "./open-served-file.js";
import type { HubRoute } from "./parse-hub-path.js";
import { type SentRecorder, sendFile } from "./send-file.js";
import { findListedModel } from "./find-listed-model.js";
import { isPeerRequest } from "./peer-request.js";
import { chooseModel, dueForRecheck, findServedModel, isInstalled } from "./served-model.js";
import { listTree, pathsInfo, withLastCommit } from "./tree-entries.js";

/** A paths-info body names paths, not content: more than this is no client's. */
const MAX_BODY_BYTES = 1024 * 1024;

/** Answers `route`; resolves with the model served, if any (for the log). */
export async function answerRoute(
  runtime: Runtime,
  route: HubRoute,
  { req, res, url, caller, signal }: { req: IncomingMessage; res: ServerResponse; url: URL; caller: string; signal: AbortSignal },
  sent: SentRecorder,
): Promise<string | undefined> {
  if (route.route === "blob") {
    const peers = runtime.peers;
    // a server that lists itself among its peers (through an address it cannot tell is its own) learns so from this
    if (peers?.list) res.setHeader("X-Modelcache-Instance", peers.list.instanceId);
    const file = await openStoredContent(runtime, route.sha256);
    if (!file) {
      res.writeHead(404, { "Content-Type": "application/json" }).end(JSON.stringify({ errors: [{ code: "BLOB_UNKNOWN", message: "blob unknown to this modelcache's content store", detail: { digest: `sha256:${route.sha256}` } }] }));
      return undefined;
    }
    const headers = { "Docker-Content-Digest": `sha256:${route.sha256}`, ETag: `"sha256:${route.sha256}"` };
    if (peers && isPeerRequest(req)) {
      // what peers get shares one cap (if any), and counts as sent to peers
      const { uploads } = peers;
      const pace = uploads.bytesPerSecond === undefined ? undefined : (bytes: number) => uploads.take(bytes, signal);
      await sendFile(req, res, file, headers, (bytes) => (sent(bytes), uploads.sent(bytes)), pace);
    } else {
      await sendFile(req, res, file, headers, sent);
    }
    return undefined;
  }
  if (route.route === "resolve") {
    // a model not installed: its file answers as soon as the pull has verified it, not once the whole model is in
    const record = await chooseModel(runtime, route.repo, route.revision);
    if (!isInstalled(record) && record.pullPolicy !== "never") {
      // the pull asks an ALWAYS model's source: that is its check of the minute
      dueForRecheck(runtime, record);
      // a HEAD of a file whose sha256 the source lists needs only the listing
      const listed = req.method === "HEAD" ? await listingOfPull(runtime, record, signal) : undefined;
      const known = listed?.files.find((f) => f.path === route.path && f.sha256 !== undefined);
      if (listed && known) {
        await sendFile(req, res, { handle: undefined, size: known.sizeBytes, sha256: known.sha256! }, fileHeaders(listed.commit, { size: known.sizeBytes, sha256: known.sha256! }));
        return record.name;
      }
      const early = await awaitPulledFile(runtime, record, route.path, signal);
      if (early) {
        runtime.uses.record(record.name);
        await sendFile(req, res, early.file, fileHeaders(early.commit, early.file), sent);
        return record.name;
      }
    }
    const served = await findServedModel(runtime, route.repo, route.revision, caller, signal);
    const file = await openInstalledFile(served, route.path);
    runtime.uses.record(served.record.name);
    await sendFile(req, res, file, fileHeaders(served.commit, file), sent);
    return served.record.name;
  }
  const served = await findListedModel(runtime, route.repo, route.revision, caller, signal);
  const name = served.record.name;
  switch (route.route) {
    case "model_info":
      sendJson(res, modelInfo(served));
      break;
    case "tree": {
      const entries = await listTree(runtime, served, route.path, isTrue(url.searchParams.get("recursive")));
      sendJson(res, isTrue(url.searchParams.get("expand")) ? entries.map((entry) => withLastCommit(served, entry)) : entries);
      break;
    }
    case "paths_info": {
      const { paths, expand } = await pathsRequest(req);
      sendJson(res, await pathsInfo(runtime, served, paths, expand));
      break;
    }
  }
  return name;
}

/** What the hub says of a file it sends: the commit, and the sha256 as its etag. */
function fileHeaders(commit: string, file: Pick<OpenedFile, "size" | "sha256">): Record<string, string> {
  const etag = `"${file.sha256}"`;
  return { "X-Repo-Commit": commit, ETag: etag, "X-Linked-Etag": etag, "X-Linked-Size": String(file.size) };
}

function isTrue(value: string | null | undefined | boolean): boolean {
  return value === true || value === "true" || value === "1" || value === "True";
}

function sendJson(res: ServerResponse, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(200, { "Content-Type": "application/json", "Content-Length": String(Buffer.byteLength(text)) }).end(text);
}

/** The `paths` and `expand` of a paths-info body: JSON `{"paths": [...], "expand": true}` or a form with `paths` once per path. */
async function pathsRequest(req: IncomingMessage): Promise<{ paths: string[]; expand: boolean }> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    length += chunk.length;
    if (length > MAX_BODY_BYTES) throw new ModelCacheError("invalid_argument", `the paths-info body is over ${MAX_BODY_BYTES} bytes: ask for fewer paths at once`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  let paths: unknown;
  let expand: unknown;
  if ((req.headers["content-type"] ?? "").includes("application/json")) {
    try {
      ({ paths, expand } = (JSON.parse(text) as { paths?: unknown; expand?: unknown } | null) ?? {});
    } catch {
      throw new ModelCacheError("invalid_argument", "the paths-info body is not JSON: send {\"paths\": [...]} or a form with paths=...");
    }
  } else {
    const form = new URLSearchParams(text);
    paths = form.getAll("paths");
    expand = form.get("expand");
  }
  if (typeof paths === "string") paths = [paths];
  if (!Array.isArray(paths) || paths.some((p) => typeof p !== "string")) throw new ModelCacheError("invalid_argument", "paths-info needs 'paths': a list of file or directory paths");
  return { paths: paths as string[], expand: isTrue(expand as string | boolean | null | undefined) };
}
