// A real S3-compatible server (s3rver, in a child process) on loopback with a temp directory,
// behind a fault-injecting HTTP proxy of our own that the tests point the
// server at: it records every request and can answer 503 SlowDown, drop a
// connection midway through a body, corrupt bytes, or announce a full-object
// SHA-256 checksum (s3rver keeps none) on HEAD.
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { type IncomingMessage, type Server, type ServerResponse, createServer, request } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DeleteObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";

/** The key pair s3rver accepts. */
export const S3_CREDENTIALS = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };

export interface S3Request {
  method: string;
  key: string;
  query: string;
  range?: string;
  sent: number;
  /** whether the request carried a signature */
  signed: boolean;
}

export class FakeS3 {
  readonly requests: S3Request[] = [];
  readonly faults = {
    /** 503 SlowDown for the next n requests of the key */
    slowDown: new Map<string, number>(),
    /** the next GET of the key is cut after this many body bytes */
    dropAfter: new Map<string, number>(),
    /** GETs of these keys have their first byte flipped */
    corrupt: new Set<string>(),
    /** runs once before the next GET of the key reaches the store */
    beforeGet: new Map<string, () => Promise<void>>(),
    /** runs once before the next HEAD of the key reaches the store */
    beforeHead: new Map<string, () => Promise<void>>(),
    /** HEAD of the key announces this full-object SHA-256 (hex) */
    checksum: new Map<string, string>(),
  };
  readonly admin: S3Client;

  private constructor(
    private readonly s3rver: ChildProcess,
    private readonly proxy: Server,
    private readonly dir: string,
    readonly storePort: number,
    readonly url: string,
  ) {
    this.admin = new S3Client({ endpoint: `http://127.0.0.1:${storePort}`, region: "us-east-1", forcePathStyle: true, credentials: S3_CREDENTIALS });
  }

  static async start(buckets: string[]): Promise<FakeS3> {
    const dir = await mkdtemp(join(tmpdir(), "modelcache-s3-"));
    const s3rver = spawn(process.execPath, ["--openssl-legacy-provider", join(import.meta.dirname, "s3rver-child.cjs"), dir, ...buckets], { stdio: ["ignore", "pipe", "inherit"] });
    const [line] = (await once(s3rver.stdout!, "data")) as [Buffer];
    const port = Number(line.toString().trim());
    let self: FakeS3 | undefined;
    const proxy = createServer((req, res) => self!.handle(req, res));
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    self = new FakeS3(s3rver, proxy, dir, port, `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`);
    return self;
  }

  async put(bucket: string, objects: Record<string, string | Buffer>): Promise<void> {
    for (const [key, body] of Object.entries(objects)) await this.admin.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
  }

  async delete(bucket: string, key: string): Promise<void> {
    await this.admin.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
  }

  /** The GETs of an object's bytes. */
  gets(key: string): S3Request[] {
    return this.requests.filter((r) => r.method === "GET" && r.key === key);
  }

  async close(): Promise<void> {
    this.admin.destroy();
    this.proxy.closeAllConnections();
    await new Promise<void>((resolve) => this.proxy.close(() => resolve()));
    if (this.s3rver.exitCode === null) {
      this.s3rver.kill("SIGTERM");
      await once(this.s3rver, "exit");
    }
    await rm(this.dir, { recursive: true, force: true });
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? "/", "http://store");
    // path-style: /bucket/key
    const key = decodeURIComponent(url.pathname.split("/").slice(2).join("/"));
    const record: S3Request = { method: req.method ?? "GET", key, query: url.search, range: req.headers.range, sent: 0, signed: req.headers.authorization !== undefined };
    this.requests.push(record);
    const slow = this.faults.slowDown.get(key) ?? 0;
    if (slow > 0) {
      this.faults.slowDown.set(key, slow - 1);
      req.resume();
      res.writeHead(503, { "content-type": "application/xml" }).end("<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>");
      return;
    }
    const hooks = req.method === "GET" ? this.faults.beforeGet : req.method === "HEAD" ? this.faults.beforeHead : undefined;
    const hook = hooks?.get(key);
    if (hook !== undefined) {
      hooks!.delete(key);
      req.pause();
      void hook().then(() => this.forward(req, res, key, record), () => res.destroy());
      return;
    }
    this.forward(req, res, key, record);
  }

  private forward(req: IncomingMessage, res: ServerResponse, key: string, record: S3Request): void {
    const upstream = request({ host: "127.0.0.1", port: this.storePort, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      const headers = { ...answer.headers };
      const checksum = this.faults.checksum.get(key);
      if (checksum !== undefined && req.method === "HEAD") {
        headers["x-amz-checksum-sha256"] = Buffer.from(checksum, "hex").toString("base64");
        headers["x-amz-checksum-type"] = "FULL_OBJECT";
      }
      res.writeHead(answer.statusCode ?? 502, headers);
      const drop = req.method === "GET" && (answer.statusCode ?? 0) < 300 ? this.faults.dropAfter.get(key) : undefined;
      if (drop !== undefined) this.faults.dropAfter.delete(key);
      let first = req.method === "GET" && this.faults.corrupt.has(key) && (answer.statusCode ?? 0) < 300;
      answer.on("data", (chunk: Buffer) => {
        if (first) {
          chunk = Buffer.from(chunk);
          chunk[0] = chunk[0]! ^ 0xff;
          first = false;
        }
        if (drop !== undefined && record.sent + chunk.length > drop) {
          res.write(chunk.subarray(0, drop - record.sent));
          record.sent = drop;
          answer.destroy();
          res.destroy();
          return;
        }
        record.sent += chunk.length;
        res.write(chunk);
      });
      answer.on("end", () => res.end());
    });
    upstream.on("error", () => res.destroy());
    req.pipe(upstream);
  }
}

export function sha256hex(bytes: string | Buffer): string {
  return createHash("sha256").update(bytes).digest("hex");
}
