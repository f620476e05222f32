// A Hugging Face-compatible hub on loopback for tests and benchmarks: the
// revision and tree APIs (paginated with Link rel="next"), the resolve
// endpoint of a commit, and LFS files redirected to a CDN on another origin,
// with Range support. It counts what it serves and can inject faults.
import { createHash } from "node:crypto";
import { readFile, readdir } from "node:fs/promises";
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join, relative } from "node:path";

export interface HubFileEntry {
  path: string;
  bytes: Buffer;
  lfs: boolean;
  sha256: string;
  blobId: string;
}

export interface HubRequest {
  origin: "hub" | "cdn";
  path: string;
  authorization: string | undefined;
  range: string | undefined;
  at: number;
  status: number;
  /** bytes of content sent */
  sent: number;
}

export interface Faults {
  /** serve this many bytes of the file, then cut the connection (once each) */
  dropAfter: Map<string, number>;
  /** answer 500 to the next N content requests */
  fail500: number;
  /** answer 429 with this Retry-After (seconds) to the next content request */
  retryAfter: number | undefined;
  /** serve bytes of the right size but the wrong content */
  wrongBytes: Set<string>;
  /** answer every Range request with the whole file */
  ignoreRange: boolean;
  /** the token required, if the repo is private */
  token: string | undefined;
  /** slow every content response down to this many bytes per second */
  bytesPerSecond: number | undefined;
  /** send nothing of this file's content until the promise settles (a test orders a race with it) */
  hold: Map<string, Promise<unknown>>;
}

export class FakeHub {
  commit: string;
  readonly requests: HubRequest[] = [];
  readonly faults: Faults = { dropAfter: new Map(), fail500: 0, retryAfter: undefined, wrongBytes: new Set(), ignoreRange: false, token: undefined, bytesPerSecond: undefined, hold: new Map() };
  /** entries per page of the tree listing */
  pageSize = 2;
  /** bytes per write of a response: small in tests, so faults land midway; large in benchmarks */
  chunkBytes = 64 * 1024;
  /** most file contents being sent at once, since the hub started */
  peakContentStreams = 0;
  private contentStreams = 0;
  private hub!: Server;
  private cdn!: Server;
  url = "";
  private cdnUrl = "";

  private constructor(
    readonly repo: string,
    readonly files: HubFileEntry[],
  ) {
    const digest = createHash("sha1");
    for (const f of files) digest.update(`${f.path}\0${f.blobId}\0`);
    this.commit = digest.digest("hex");
  }

  /** Serves the files of `dir` as `repo`; files over `lfsOver` bytes (and *.safetensors) are LFS files. */
  static async serve(repo: string, dir: string, extra: Record<string, Buffer | string> = {}, lfsOver = 4096): Promise<FakeHub> {
    const entries: HubFileEntry[] = [];
    const add = (path: string, bytes: Buffer) => {
      entries.push({
        path,
        bytes,
        lfs: bytes.length > lfsOver || path.endsWith(".safetensors"),
        sha256: createHash("sha256").update(bytes).digest("hex"),
        blobId: createHash("sha1").update(`blob ${bytes.length}\0`).update(bytes).digest("hex"),
      });
    };
    const walk = async (at: string) => {
      for (const entry of await readdir(at, { withFileTypes: true })) {
        const path = join(at, entry.name);
        if (entry.isDirectory()) await walk(path);
        else if (entry.isFile()) add(relative(dir, path), await readFile(path));
      }
    };
    await walk(dir);
    for (const [path, content] of Object.entries(extra)) add(path, Buffer.from(content));
    add(".gitattributes", Buffer.from("*.safetensors filter=lfs diff=lfs merge=lfs -text\n"));
    entries.sort((a, b) => (a.path < b.path ? -1 : 1));
    const hub = new FakeHub(repo, entries);
    await hub.listen();
    return hub;
  }

  /** A new commit in which `path` holds `content` (added or changed); returns the new commit. */
  commitFile(path: string, content: Buffer | string, lfsOver = 4096): string {
    const bytes = Buffer.from(content);
    const entry: HubFileEntry = {
      path,
      bytes,
      lfs: bytes.length > lfsOver || path.endsWith(".safetensors"),
      sha256: createHash("sha256").update(bytes).digest("hex"),
      blobId: createHash("sha1").update(`blob ${bytes.length}\0`).update(bytes).digest("hex"),
    };
    const at = this.files.findIndex((f) => f.path === path);
    if (at >= 0) this.files[at] = entry;
    else this.files.push(entry);
    this.files.sort((a, b) => (a.path < b.path ? -1 : 1));
    const digest = createHash("sha1");
    for (const f of this.files) digest.update(`${f.path}\0${f.blobId}\0`);
    this.commit = digest.digest("hex");
    return this.commit;
  }

  file(path: string): HubFileEntry {
    return this.files.find((f) => f.path === path)!;
  }

  /** Bytes of content sent for `path` (hub and CDN together). */
  sent(path: string): number {
    return this.contentRequests(path).reduce((sum, r) => sum + r.sent, 0);
  }

  contentRequests(path: string): HubRequest[] {
    const file = this.file(path);
    return this.requests.filter((r) => (r.origin === "hub" && r.path.endsWith(`/resolve/${this.commit}/${file.path}`)) || r.path === `/lfs/${file.sha256}`);
  }

  async close(): Promise<void> {
    for (const server of [this.hub, this.cdn]) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  }

  private async listen(): Promise<void> {
    this.cdn = createServer((req, res) => void this.handle("cdn", req, res));
    this.hub = createServer((req, res) => void this.handle("hub", req, res));
    for (const server of [this.hub, this.cdn]) await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.hub.address() as AddressInfo).port}`;
    this.cdnUrl = `http://127.0.0.1:${(this.cdn.address() as AddressInfo).port}`;
  }

  private async handle(origin: "hub" | "cdn", req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url!, "http://x");
    const record: HubRequest = { origin, path: decodeURIComponent(url.pathname), authorization: req.headers.authorization, range: req.headers.range, at: performance.now(), status: 200, sent: 0 };
    this.requests.push(record);
    const reply = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      record.status = status;
      res.writeHead(status, { "content-type": "application/json", ...headers });
      res.end(typeof body === "string" ? body : JSON.stringify(body));
    };
    if (origin === "hub" && this.faults.token !== undefined) {
      if (!req.headers.authorization) return reply(401, { error: "Invalid credentials in Authorization header" });
      if (req.headers.authorization !== `Bearer ${this.faults.token}`) return reply(403, { error: "Access to this repo is restricted" });
    }
    const api = /^\/api\/models\/(.+)\/(revision|tree)\/([^/]+)$/.exec(record.path);
    if (origin === "hub" && api) {
      const [, repo, kind, revision] = api;
      if (repo !== this.repo || (revision !== "main" && revision !== this.commit)) return reply(404, { error: "Revision Not Found" });
      if (kind === "revision") return reply(200, { id: this.repo, sha: this.commit, siblings: this.files.map((f) => ({ rfilename: f.path })) });
      const cursor = Number(url.searchParams.get("cursor") ?? 0);
      const page = this.files.slice(cursor, cursor + this.pageSize).map((f) => ({
        type: "file",
        oid: f.blobId,
        size: f.lfs ? 134 : f.bytes.length,
        path: f.path,
        ...(f.lfs ? { lfs: { oid: f.sha256, size: f.bytes.length, pointerSize: 134 } } : {}),
      }));
      const dirs = cursor === 0 ? [{ type: "directory", oid: "0".repeat(40), size: 0, path: "1_Pooling" }] : [];
      const next = cursor + this.pageSize < this.files.length ? { link: `<${this.url}/api/models/${this.repo}/tree/${revision}?recursive=true&cursor=${cursor + this.pageSize}>; rel="next"` } : undefined;
      return reply(200, [...dirs, ...page], next);
    }
    const resolve = new RegExp(`^/${this.repo}/resolve/([^/]+)/(.+)$`).exec(record.path);
    if (origin === "hub" && resolve) {
      const [, revision, path] = resolve;
      const file = this.files.find((f) => f.path === path);
      if (!file || (revision !== this.commit && revision !== "main")) return reply(404, { error: "Entry not found" });
      if (file.lfs) {
        record.status = 302;
        res.writeHead(302, { location: `${this.cdnUrl}/lfs/${file.sha256}`, "x-repo-commit": this.commit });
        return void res.end();
      }
      return this.sendContent(file, req, res, record);
    }
    const lfs = /^\/lfs\/([0-9a-f]{64})$/.exec(record.path);
    if (origin === "cdn" && lfs) {
      const file = this.files.find((f) => f.sha256 === lfs[1]);
      if (file) return this.sendContent(file, req, res, record);
    }
    reply(404, { error: "not found" });
  }

  private async sendContent(file: HubFileEntry, req: IncomingMessage, res: ServerResponse, record: HubRequest): Promise<void> {
    await this.faults.hold.get(file.path)?.catch(() => undefined);
    if (this.faults.fail500 > 0) {
      this.faults.fail500 -= 1;
      record.status = 500;
      res.writeHead(500).end("boom");
      return;
    }
    if (this.faults.retryAfter !== undefined) {
      record.status = 429;
      res.writeHead(429, { "retry-after": String(this.faults.retryAfter) }).end("slow down");
      this.faults.retryAfter = undefined;
      return;
    }
    let bytes = file.bytes;
    if (this.faults.wrongBytes.has(file.path)) {
      bytes = Buffer.from(bytes);
      bytes[bytes.length - 1] ^= 0xff;
    }
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
    const ranged = range !== null && !this.faults.ignoreRange;
    const start = ranged ? Number(range[1]) : 0;
    const end = ranged && range[2] !== "" ? Math.min(bytes.length, Number(range[2]) + 1) : bytes.length;
    const body = bytes.subarray(start, end);
    record.status = ranged ? 206 : 200;
    res.writeHead(record.status, {
      "content-length": String(body.length),
      "accept-ranges": "bytes",
      ...(ranged ? { "content-range": `bytes ${start}-${end - 1}/${bytes.length}` } : {}),
    });
    this.contentStreams += 1;
    this.peakContentStreams = Math.max(this.peakContentStreams, this.contentStreams);
    res.once("close", () => (this.contentStreams -= 1));
    const dropAfter = this.faults.dropAfter.get(file.path);
    if (dropAfter !== undefined) this.faults.dropAfter.delete(file.path);
    const chunk = this.chunkBytes;
    for (let offset = 0; offset < body.length; offset += chunk) {
      if (dropAfter !== undefined && record.sent >= dropAfter) {
        res.destroy();
        return;
      }
      const part = body.subarray(offset, offset + chunk);
      record.sent += part.length;
      if (!res.write(part)) await new Promise((resolve) => res.once("drain", resolve));
      // no pause after the last part: the response ends as its last byte goes, so a client's next request never overlaps it
      if (this.faults.bytesPerSecond && offset + chunk < body.length) await new Promise((resolve) => setTimeout(resolve, (part.length / this.faults.bytesPerSecond!) * 1000));
      if (res.destroyed) return;
    }
    res.end();
  }
}
