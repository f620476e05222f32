// The CNCF distribution registry (Debian's docker-registry) on a loopback
// port with filesystem storage in a temp dir, and a small pusher speaking
// the distribution API (blob upload: POST then PUT ?digest=; manifest PUT).
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const REGISTRY_BINARY = "/usr/bin/docker-registry";
export const registryAvailable = existsSync(REGISTRY_BINARY);

export const sha256 = (data: Buffer | string) => createHash("sha256").update(data).digest("hex");

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

/** A bcrypt htpasswd line (libxcrypt through Python's crypt; cost 4, a test login), or undefined when this machine cannot make one. */
export function htpasswdLine(user: string, password: string): string | undefined {
  try {
    const hash = execFileSync("python3", ["-W", "ignore", "-c", "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))", password], { encoding: "utf8" }).trim();
    return hash.startsWith("$2") ? `${user}:${hash}` : undefined;
  } catch {
    // no python3 or no crypt module: the caller skips its test and says why
    return undefined;
  }
}

export class OciRegistry {
  /** the registry's log lines (one per request, with method and URI) */
  log = "";
  private constructor(
    private readonly child: ChildProcess,
    readonly dir: string,
    readonly address: string,
    private readonly authorization?: string,
  ) {}

  static async start(options: { htpasswd?: { user: string; password: string; line: string } } = {}): Promise<OciRegistry> {
    const dir = await mkdtemp(join(tmpdir(), "oci-registry-"));
    const port = await freePort();
    const auth = options.htpasswd
      ? `auth:\n  htpasswd:\n    realm: test\n    path: ${join(dir, "htpasswd")}\n`
      : "";
    if (options.htpasswd) await writeFile(join(dir, "htpasswd"), `${options.htpasswd.line}\n`);
    const config = `version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, "data")}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n${auth}`;
    await writeFile(join(dir, "config.yml"), config);
    const child = spawn(REGISTRY_BINARY, ["serve", join(dir, "config.yml")], { stdio: ["ignore", "pipe", "pipe"] });
    const registry = new OciRegistry(child, dir, `127.0.0.1:${port}`, options.htpasswd ? `Basic ${Buffer.from(`${options.htpasswd.user}:${options.htpasswd.password}`).toString("base64")}` : undefined);
    child.stdout!.on("data", (chunk: Buffer) => (registry.log += chunk.toString()));
    child.stderr!.on("data", (chunk: Buffer) => (registry.log += chunk.toString()));
    for (let i = 0; ; i++) {
      const ok = await fetch(`http://${registry.address}/v2/`).then((r) => r.status === 200 || r.status === 401, () => false);
      if (ok) return registry;
      if (child.exitCode !== null || i > 200) {
        await registry.close();
        throw new Error(`docker-registry did not start: ${registry.log}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50)); // polling for readiness, not ordering a race
    }
  }

  /** The blob GETs the registry served for `digest`. */
  blobGets(digest: string): number {
    return this.log.split("\n").filter((line) => line.includes(`blobs/${digest}`) && line.includes("http.request.method=GET") && line.includes("response completed")).length;
  }

  /** Where the registry keeps a blob's bytes (for a test to corrupt them). */
  blobPath(digest: string): string {
    const hex = digest.slice("sha256:".length);
    return join(this.dir, "data", "docker", "registry", "v2", "blobs", "sha256", hex.slice(0, 2), hex, "data");
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return this.authorization ? { authorization: this.authorization, ...extra } : extra;
  }

  async pushBlob(repository: string, data: Buffer | string): Promise<{ digest: string; size: number }> {
    const bytes = Buffer.from(data);
    const digest = `sha256:${sha256(bytes)}`;
    const start = await fetch(`http://${this.address}/v2/${repository}/blobs/uploads/`, { method: "POST", headers: this.headers() });
    if (start.status !== 202) throw new Error(`blob upload start: ${start.status} ${await start.text()}`);
    const location = new URL(start.headers.get("location")!, `http://${this.address}`);
    location.searchParams.set("digest", digest);
    const put = await fetch(location, { method: "PUT", headers: this.headers({ "content-type": "application/octet-stream" }), body: bytes });
    if (put.status !== 201) throw new Error(`blob upload: ${put.status} ${await put.text()}`);
    return { digest, size: bytes.length };
  }

  async pushManifest(repository: string, reference: string, manifest: object, mediaType = "application/vnd.oci.image.manifest.v1+json"): Promise<string> {
    const bytes = Buffer.from(JSON.stringify(manifest));
    const put = await fetch(`http://${this.address}/v2/${repository}/manifests/${reference}`, { method: "PUT", headers: this.headers({ "content-type": mediaType }), body: bytes });
    if (put.status !== 201) throw new Error(`manifest put: ${put.status} ${await put.text()}`);
    return `sha256:${sha256(bytes)}`;
  }

  /** Pushes a ModelPack artifact of raw layers, one per file; returns the manifest digest. */
  async pushModelPack(repository: string, tag: string, files: Record<string, string | Buffer>, annotation = "org.cncf.model.filepath"): Promise<string> {
    const config = await this.pushBlob(repository, JSON.stringify({ descriptor: { name: repository }, modelfs: { type: "layers", diffIds: [] } }));
    const layers = [];
    for (const [path, data] of Object.entries(files)) {
      const blob = await this.pushBlob(repository, data);
      layers.push({ mediaType: "application/vnd.cncf.model.weight.v1.raw", ...blob, annotations: { [annotation]: path } });
    }
    return this.pushManifest(repository, tag, {
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      artifactType: "application/vnd.cncf.model.manifest.v1+json",
      config: { mediaType: "application/vnd.cncf.model.config.v1+json", ...config },
      layers,
    });
  }

  async close(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((resolve) => this.child.once("exit", resolve));
      this.child.kill("SIGTERM");
      await exited;
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}
