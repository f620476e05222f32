import { spawn } from "node:child_process";
import { mkdir, mkdtemp, readdir, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import { pino } from "pino";
import { createServer } from "node:net";
import type { AddressInfo } from "node:net";
import { type ServerOptions, startServer } from "../src/server/start-server.js";
import { CacheStatus, ModelStatus } from "../generated/modelcache/v1/model_cache.js";
import { makeSourceDir, snapshot } from "./support/source-dir.js";
import { bufCurl } from "./support/buf-curl.js";
import { FIXTURE_DIR, type TestServer, call, kindOf, modelSpec, pull, pullOk, startTestServer } from "./support/test-server.js";

const ROOT = join(import.meta.dirname, "..");

describe("server", () => {
  let t: TestServer;
  beforeEach(async () => {
    t = await startTestServer();
  });
  afterEach(() => t.close());

  describe("reflection, driven by buf curl with no proto files at hand", () => {
    it("lists the services and every method", async () => {
      const services = (await bufCurl(t.server.address, "--list-services", "")).trim().split("\n");
      expect(services).to.include.members(["modelcache.v1.ModelCacheService", "grpc.health.v1.Health"]);
      const methods = (await bufCurl(t.server.address, "--list-methods", "")).trim().split("\n");
      for (const m of ["RegisterModel", "UpdateModel", "GetModel", "ListModels", "UnregisterModel", "Pull", "InspectCache", "DropCache", "PutSecret", "DeleteSecret"]) {
        expect(methods).to.include(`modelcache.v1.ModelCacheService/${m}`);
      }
    });

    it("registers, pulls (the stream), inspects and checks health", async () => {
      const svc = "/modelcache.v1.ModelCacheService";
      const registered = JSON.parse(
        await bufCurl(t.server.address, "-d", JSON.stringify({ model: { name: "minilm", source: "org/minilm", revision: "main", task: "TASK_EMBEDDING", dimensions: 8 } }), `${svc}/RegisterModel`),
      );
      expect(registered.model).to.include({ name: "minilm", status: "MODEL_STATUS_REGISTERED", engine: "ENGINE_CANDLE" });
      expect(registered.model.createdAt).to.match(/^\d{4}-\d\d-\d\dT/);

      const stream = await bufCurl(t.server.address, "-d", JSON.stringify({ name: "minilm", fixture_dir: FIXTURE_DIR }), `${svc}/Pull`);
      const events = stream
        .split(/\n(?=\{)/)
        .map((chunk) => JSON.parse(chunk))
        .map((e: Record<string, unknown>) => Object.keys(e).find((k) => k !== "name"));
      expect(events[0]).to.equal("started");
      expect(events.at(-1)).to.equal("completed");
      expect(events.filter((e) => e === "fileCompleted")).to.have.length(4);

      const inspected = JSON.parse(await bufCurl(t.server.address, "-d", JSON.stringify({ name: "minilm", deep: true }), `${svc}/InspectCache`));
      expect(inspected.status).to.equal("CACHE_STATUS_INSTALLED");
      expect(inspected.manifest.files).to.have.length(4);
      expect(inspected.manifest.installedAt).to.match(/^\d{4}-\d\d-\d\dT/);

      for (const service of ["", "modelcache.v1.ModelCacheService"]) {
        const health = JSON.parse(await bufCurl(t.server.address, "-d", JSON.stringify({ service }), "/grpc.health.v1.Health/Check"));
        expect(health).to.deep.equal({ status: "SERVING" });
      }
    });
  });

  describe("shutdown", () => {
    it("cancels a running pull cleanly: staging removed, previous install kept, registry closed and reopenable", async () => {
      await call(t.client, "registerModel", { model: modelSpec() });
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      const before = await snapshot(join(t.cacheRoot, "minilm"));
      const source = await makeSourceDir({ "a.bin": Buffer.alloc(64 * 1024 * 1024, 3), "b.bin": "b" });
      try {
        let closing: Promise<void> | undefined;
        const outcome = await pull(t.client, { name: "minilm", fixtureDir: source.dir }, {
          onEvent: (event) => {
            if (event.fileStarted) closing ??= t.server.close();
          },
        });
        await closing;
        expect(outcome.error?.code).to.equal(status.UNAVAILABLE);
        expect(outcome.error?.details).to.include("shutting down");
        expect(outcome.events.map(kindOf)).to.not.include("completed");
        expect(await readdir(join(t.cacheRoot, ".staging"))).to.deep.equal([]);
        expect(await snapshot(join(t.cacheRoot, "minilm"))).to.deep.equal(before);
        await t.restart();
        expect((await call(t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      } finally {
        await source.cleanup();
      }
    });

    it("lets a unary call that is under way finish while it cancels a pull", async () => {
      await call(t.client, "registerModel", { model: modelSpec() });
      await call(t.client, "registerModel", { model: modelSpec({ name: "other" }) });
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      const source = await makeSourceDir({ "a.bin": Buffer.alloc(64 * 1024 * 1024, 4) });
      try {
        // a change to minilm in progress (DropCache refuses while a pull of the same model runs)
        const release = await t.server.runtime.locks.acquire("minilm", undefined);
        let drop: ReturnType<typeof call<"dropCache">> | undefined;
        const pulling = pull(t.client, { name: "other", fixtureDir: source.dir }, {
          onEvent: (event) => {
            if (event.fileStarted) drop ??= call(t.client, "dropCache", { name: "minilm", force: false });
          },
        });
        // the drop is under way once it waits for the model's lock
        while (t.server.runtime.locks.users("minilm") < 2) await new Promise((r) => setTimeout(r, 5));
        const closing = t.server.close();
        expect((await pulling).error?.code).to.equal(status.UNAVAILABLE);
        await release();
        expect(await drop).to.include({ name: "minilm", removed: true });
        await closing;
        expect(await readdir(t.cacheRoot)).to.not.include("minilm");
      } finally {
        await source.cleanup();
      }
    });
  });

  describe("startup", () => {
    it("clears .staging and restores an install that a crash left parked in .purge", async () => {
      await call(t.client, "registerModel", { model: modelSpec() });
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      const before = await snapshot(join(t.cacheRoot, "minilm"));
      await t.server.close();
      // a crash between the two renames of a promotion: the old install is parked, the new one not yet in place
      await rename(join(t.cacheRoot, "minilm"), join(t.cacheRoot, ".purge", "minilm.0123456789ab"));
      await mkdir(join(t.cacheRoot, ".staging", "minilm.ba9876543210"), { recursive: true });
      await writeFile(join(t.cacheRoot, ".staging", "minilm.ba9876543210", "half.bin"), "half");
      await t.restart();
      expect(await snapshot(join(t.cacheRoot, "minilm"))).to.deep.equal(before);
      expect(await readdir(join(t.cacheRoot, ".staging"))).to.deep.equal([]);
      expect(await readdir(join(t.cacheRoot, ".purge"))).to.deep.equal([]);
      expect((await call(t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    });

    it("deletes a replaced install left in .purge when the model has its new install", async () => {
      await call(t.client, "registerModel", { model: modelSpec() });
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      await t.server.close();
      await mkdir(join(t.cacheRoot, ".purge", "minilm.0123456789ab"), { recursive: true });
      await writeFile(join(t.cacheRoot, ".purge", "minilm.0123456789ab", "old.bin"), "old");
      await t.restart();
      expect(await readdir(join(t.cacheRoot, ".purge"))).to.deep.equal([]);
      expect(await readdir(join(t.cacheRoot, "minilm"))).to.not.include("old.bin");
    });

    it("refuses to start a second server on a data dir in use, saying so", async () => {
      let error: Error | undefined;
      try {
        const second = await startServer({ listen: "127.0.0.1:0", dataDir: t.dataDir, logger: pino({ level: "silent" }) });
        await second.close();
      } catch (err) {
        error = err as Error;
      }
      expect(error?.message).to.include("in use");
      expect((await call(t.client, "listModels", {})).models).to.deep.equal([]);
    });

    describe("a start that fails", () => {
      let dir: string;
      const quiet = pino({ level: "silent" });
      beforeEach(async () => {
        dir = await mkdtemp(join(tmpdir(), "modelcache-start-"));
      });
      afterEach(() => rm(dir, { recursive: true, force: true }));

      const badOptions: [string, Partial<ServerOptions>, string][] = [
        ["--max-concurrent-streams", { maxConcurrentStreams: 0 }, "--max-concurrent-streams"],
        ["--hub-url", { hubUrl: "not a url" }, "--hub-url"],
        ["--metrics-listen", { metricsListen: "nonsense" }, "--metrics-listen"],
        ["--max-pull-bytes", { pullLimits: { maxTotalBytes: -1 } }, "--max-pull-bytes"],
        ["--parallel-range-min-bytes", { parallelRangeMinBytes: 10 }, "--parallel-range-min-bytes"],
        ["--tls-cert and --tls-key", { tls: { cert: "/nonexistent/cert.pem", key: "/nonexistent/key.pem" } }, "--tls-"],
      ];
      it("refuses a --vault-key-file others may read before it creates anything in the data dir", async () => {
        const keyDir = await mkdtemp(join(tmpdir(), "modelcache-key-"));
        try {
          const vaultKeyFile = join(keyDir, "vault.key");
          await writeFile(vaultKeyFile, Buffer.alloc(32, 7), { mode: 0o644 });
          const error = await startServer({ listen: "127.0.0.1:0", dataDir: join(dir, "data"), logger: quiet, offline: true, vaultKeyFile }).catch((err: Error) => err);
          expect((error as Error).message).to.include("--vault-key-file").and.include("chmod 600");
          expect(await readdir(dir)).to.deep.equal([]);
        } finally {
          await rm(keyDir, { recursive: true, force: true });
        }
      });

      for (const [flag, options, named] of badOptions) {
        it(`refuses a bad ${flag} before it creates anything in the data dir or the cache root`, async () => {
          const dataDir = join(dir, "data");
          const cacheDir = join(dir, "cache");
          const error = await startServer({ listen: "127.0.0.1:0", dataDir, cacheDir, logger: quiet, offline: true, ...options }).then(
            async (server) => {
              await server.close();
              throw new Error("the server started");
            },
            (err: Error) => err,
          );
          expect(error.message).to.include(named);
          expect(await readdir(dir)).to.deep.equal([]);
        });
      }

      it("when its port is in use, closes the metrics listener and the registry it had opened", async () => {
        const dataDir = join(dir, "data");
        const taken = await occupyPort();
        const metricsPort = await freePort();
        try {
          const error = await startServer({ listen: `127.0.0.1:${taken.port}`, metricsListen: `127.0.0.1:${metricsPort}`, dataDir, logger: quiet, offline: true }).catch((err: Error) => err);
          expect((error as Error).message).to.include("cannot listen on");
        } finally {
          await taken.close();
        }
        // the metrics port is free again, and the data dir is not locked
        await (await occupyPort(metricsPort)).close();
        const again = await startServer({ listen: "127.0.0.1:0", dataDir, logger: quiet, offline: true });
        await again.close();
      });

      it("when the metrics port is in use, closes the gRPC listener and the registry it had opened", async () => {
        const dataDir = join(dir, "data");
        const taken = await occupyPort();
        const grpcPort = await freePort();
        try {
          const error = await startServer({ listen: `127.0.0.1:${grpcPort}`, metricsListen: `127.0.0.1:${taken.port}`, dataDir, logger: quiet, offline: true }).catch((err: Error) => err);
          expect((error as Error).message).to.include("EADDRINUSE");
        } finally {
          await taken.close();
        }
        await (await occupyPort(grpcPort)).close();
        const again = await startServer({ listen: "127.0.0.1:0", dataDir, logger: quiet, offline: true });
        await again.close();
      });
    });

    it("reports SERVING for the service and the server as a whole", async () => {
      const out = await bufCurl(t.server.address, "-d", '{"service":"modelcache.v1.ModelCacheService"}', "/grpc.health.v1.Health/Check");
      expect(JSON.parse(out)).to.deep.equal({ status: "SERVING" });
    });
  });
});

describe("modelcache serve (the command)", () => {
  let dataDir: string;
  beforeEach(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "modelcache-cli-"));
  });
  afterEach(() => rm(dataDir, { recursive: true, force: true }));

  it("takes settings from flags and MODELCACHE_* variables (the flag wins) and stops cleanly on SIGTERM", async () => {
    const cacheDir = join(dataDir, "flag-cache");
    const child = spawn(process.execPath, [join(ROOT, "bin", "modelcache.js"), "serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--cache-dir", cacheDir], {
      env: { ...process.env, MODELCACHE_FIXTURE_DIR: FIXTURE_DIR, MODELCACHE_CACHE_DIR: join(dataDir, "env-cache") },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const lines: Record<string, unknown>[] = [];
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
    const serving = new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on("line", (line) => {
        const entry = JSON.parse(line) as Record<string, unknown>;
        lines.push(entry);
        if (entry.msg === "modelcache is serving") resolve(entry.address as string);
      });
      void exited.then(() => reject(new Error("the server exited before serving")));
    });
    try {
      const address = await serving;
      const { ModelCacheServiceClient } = await import("../generated/modelcache/v1/model_cache.js");
      const { credentials } = await import("@grpc/grpc-js");
      const client = new ModelCacheServiceClient(address, credentials.createInsecure());
      await call(client, "registerModel", { model: modelSpec() });
      const events = await pullOk(client, { name: "minilm" });
      expect(events.at(-1)!.completed!.cacheDir).to.equal(join(cacheDir, "minilm"));
      expect((await call(client, "getModel", { name: "minilm" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
      client.close();
      child.kill("SIGTERM");
      expect(await exited).to.equal(0);
      expect(lines.map((l) => l.msg)).to.include("modelcache stopped");
      expect(lines.some((l) => l.method === "Pull" && l.code === "OK" && l.model === "minilm")).to.equal(true);
    } finally {
      child.kill("SIGKILL");
    }
  });
});

/** A TCP listener on 127.0.0.1 (on `port`, or a free one), to hold a port in use. */
async function occupyPort(port = 0): Promise<{ port: number; close(): Promise<void> }> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", resolve);
  });
  return { port: (server.address() as AddressInfo).port, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/** A port that was free a moment ago. */
async function freePort(): Promise<number> {
  const held = await occupyPort();
  await held.close();
  return held.port;
}
