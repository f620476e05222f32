// Property-based tests: random and malformed requests to every RPC (random
// and huge strings, control characters, unicode, out-of-range enums, random
// bytes as the raw message). The server must answer each with a proper
// status and a short message, stay up, and create nothing outside its cache
// root and data dir.
import { cp, mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { Metadata, type ServiceError, credentials, makeGenericClientConstructor, status } from "@grpc/grpc-js";
import { expect } from "chai";
import fc from "fast-check";
import { ModelCacheServiceService, ModelSpec, PullRequest } from "../generated/modelcache/v1/model_cache.js";
import { FakeHub } from "./support/fake-hub.js";
import { healthCheck } from "./support/health-check.js";
import { FIXTURE_DIR, type TestServer, call, modelSpec, pull, startTestServer } from "./support/test-server.js";

const RUNS = Number(process.env.RUNS ?? 100);

/** Strings a hostile or careless caller might send. */
const text = fc.oneof(
  { weight: 4, arbitrary: fc.string({ unit: "grapheme", maxLength: 40 }) },
  { weight: 2, arbitrary: fc.string({ unit: "binary", maxLength: 40 }) },
  { weight: 2, arbitrary: fc.constantFrom("", ".", "..", "../x", "../../etc/passwd", "/etc", "a/b", "minilm", "\u0000", "a\nb", "~root", "C:\\x", "%2e%2e", "\u202e") },
  { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 10_000, max: 100_000 }), fc.constantFrom("a", "é", "\u0000", "/", "😀")).map(([n, c]) => c.repeat(n)) },
);
const anEnum = fc.oneof(fc.integer({ min: 0, max: 4 }), fc.integer({ min: -1000, max: 100_000 }));
const spec = fc.record({
  name: text,
  source: text,
  revision: text,
  task: anEnum,
  // uint32 on the wire: a client cannot even encode a negative one
  dimensions: fc.oneof(fc.integer({ min: 0, max: 5000 }), fc.constant(2 ** 32 - 1)),
  engine: anEnum,
  pullPolicy: anEnum,
  trustPolicy: anEnum,
  acknowledgeRemoteCodeRisk: fc.boolean(),
  credentialAlias: text,
  include: fc.array(text, { maxLength: 3 }),
  exclude: fc.array(text, { maxLength: 3 }),
});

/** Every file below `dir`, relative to it. */
async function filesBelow(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.map((e) => relative(dir, join(e.parentPath, e.name))).sort();
}

/** Files in a data dir that are neither the registry, the cache root nor the vault key. */
async function strayFiles(dataDir: string): Promise<string[]> {
  return (await filesBelow(dataDir)).filter((f) => !f.startsWith("registry") && !f.startsWith("ai_models_cache") && f !== "vault.key" && f !== "leases.journal");
}

/**
 * A refusal the caller can act on: a defined status that is neither UNKNOWN
 * nor (for a well-formed message) INTERNAL, a short message, and no more than
 * 80 characters of any value the request sent.
 */
function expectProperStatus(err: ServiceError | undefined, sent: string[] = [], wellFormed = true): void {
  if (!err) return;
  const what = `${status[err.code]}: ${err.details.slice(0, 300)}`;
  expect(err.code, what).to.be.within(1, 16);
  expect(err.code, what).to.not.equal(status.UNKNOWN);
  if (wellFormed) expect(err.code, what).to.not.equal(status.INTERNAL);
  expect(err.details.length, "errors stay small").to.be.below(1000);
  for (const value of sent) {
    const points = Array.from(value);
    for (let at = 0; at + 81 <= points.length; at += 81) {
      expect(err.details.includes(points.slice(at, at + 81).join("")), `quotes more than 80 characters of a value: ${what}`).to.equal(false);
    }
  }
}

describe("hostile input, property-based", function () {
  this.timeout(240_000);
  let base: string;
  let root: string;
  let hub: FakeHub;
  let t: TestServer;

  before(async () => {
    base = await mkdtemp(join(tmpdir(), "modelcache-hostile-"));
    root = join(base, "sources");
    await mkdir(root);
    await cp(FIXTURE_DIR, join(root, "model"), { recursive: true });
    hub = await FakeHub.serve("acme/model", FIXTURE_DIR);
    t = await startTestServer({ fixtureRoots: [root], hubUrl: hub.url });
    await call(t.client, "registerModel", { model: modelSpec({ source: "acme/model" }) });
  });
  after(async () => {
    await t.close();
    await hub.close();
    await rm(base, { recursive: true, force: true });
  });

  /** Runs `property`, then checks the server is up and nothing appeared outside its data dir. */
  async function holds(property: fc.IAsyncProperty<never> | fc.IAsyncProperty<unknown[]>): Promise<void> {
    const cwdBefore = await readdir(process.cwd());
    const rootBefore = await filesBelow(root);
    await fc.assert(property as fc.IAsyncProperty<unknown[]>, { numRuns: RUNS });
    expect(await healthCheck(t.server.address)).to.deep.equal({ code: status.OK, status: "SERVING" });
    expect(await readdir(process.cwd())).to.deep.equal(cwdBefore);
    expect(await filesBelow(root)).to.deep.equal(rootBefore);
    const outside = await strayFiles(t.dataDir);
    expect(outside).to.deep.equal([]);
  }

  const deadline = () => Date.now() + 10_000;
  const unary = async <K extends Parameters<typeof call>[1]>(method: K, request: Parameters<typeof call<K>>[2]) => {
    try {
      await call(t.client, method, request);
      return undefined;
    } catch (err) {
      return err as ServiceError;
    }
  };

  it("RegisterModel and UpdateModel answer any spec with a proper status", async () => {
    await holds(
      fc.asyncProperty(spec, text, async (model, name) => {
        const sent = [model.name, model.source, model.revision, model.credentialAlias, ...model.include, ...model.exclude];
        expectProperStatus(await unary("registerModel", { model: ModelSpec.fromPartial(model) }), sent);
        expectProperStatus(await unary("updateModel", { name, model: ModelSpec.fromPartial(model) }), [name, ...sent]);
      }),
    );
    // whatever was registered, the registry still lists cleanly
    await call(t.client, "listModels", {});
  });

  it("ApplyModels answers any list of specs with a proper status", async () => {
    await holds(
      fc.asyncProperty(fc.array(spec, { maxLength: 3 }), fc.boolean(), async (models, dryRun) => {
        const sent = models.flatMap((m) => [m.name, m.source, m.revision, m.credentialAlias, ...m.include, ...m.exclude]);
        expectProperStatus(await unary("applyModels", { models: models.map((m) => ModelSpec.fromPartial(m)), dryRun, prune: false }), sent);
      }),
    );
    await call(t.client, "listModels", {});
  });

  it("GetModel, InspectCache, DropCache, UnregisterModel, PutSecret and DeleteSecret answer any name", async () => {
    await holds(
      fc.asyncProperty(text, text, fc.boolean(), async (name, value, flag) => {
        const sent = [name, value];
        expectProperStatus(await unary("getModel", { name }), sent);
        expectProperStatus(await unary("inspectCache", { name, deep: flag }), sent);
        expectProperStatus(await unary("dropCache", { name: name === "minilm" ? "x" : name, force: false }), sent);
        expectProperStatus(await unary("unregisterModel", { name: name === "minilm" ? "x" : name, dropCache: flag }), sent);
        expectProperStatus(await unary("putSecret", { alias: name, value }), sent);
        expectProperStatus(await unary("deleteSecret", { alias: name }), sent);
      }),
    );
  });

  it("Pull answers any name, fixture_dir and alias, reading nothing outside its fixture roots", async () => {
    const fixtureDir = fc.oneof(text, text.map((s) => join(root, s)), text.map((s) => `${root}/../${s}`), fc.constant(join(root, "model")));
    await holds(
      fc.asyncProperty(fc.oneof(fc.constant("minilm"), text), fixtureDir, fc.oneof(fc.constant(""), text), fc.boolean(), async (name, dir, alias, force) => {
        const outcome = await pull(t.client, PullRequest.fromPartial({ name, fixtureDir: dir, credentialAlias: alias, force }), { deadline: new Date(deadline()) });
        expect(outcome.error?.code, "every pull ends").to.not.equal(status.DEADLINE_EXCEEDED);
        expectProperStatus(outcome.error, [name, dir, alias]);
      }),
    );
  });

  it("answers random bytes as the raw message of every method with a proper status", async () => {
    const Raw = makeGenericClientConstructor(
      Object.fromEntries(
        Object.entries(ModelCacheServiceService).map(([key, method]) => [
          key,
          { ...method, requestSerialize: (b: Buffer) => b, requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b },
        ]),
      ),
      "Raw",
    );
    const raw = new Raw(t.server.address, credentials.createInsecure()) as unknown as Record<string, Function>;
    try {
      await holds(
        fc.asyncProperty(fc.constantFrom(...Object.keys(ModelCacheServiceService)), fc.uint8Array({ maxLength: 512 }), async (method, bytes) => {
          const err = await new Promise<ServiceError | undefined>((resolve) => {
            const handle = raw[method]!.call(raw, Buffer.from(bytes), new Metadata(), { deadline: deadline() }, (e: ServiceError | null) => resolve(e ?? undefined));
            if (handle && typeof handle.on === "function" && method === "pull") {
              handle.on("data", () => undefined);
              handle.on("error", (e: ServiceError) => resolve(e));
              handle.on("end", () => resolve(undefined));
            }
          });
          // bytes that do not decode are grpc-js's to refuse, with INTERNAL
          expectProperStatus(err, [], false);
        }),
      );
    } finally {
      (raw as unknown as { close(): void }).close();
    }
  });
});

describe("a hub whose listing tries to escape the cache", () => {
  const cases: [string, "refused" | "skipped"][] = [
    ["/abs.txt", "refused"],
    ["ctl\u0001.txt", "refused"],
    ["back\\slash.txt", "refused"],
    ["../escape.txt", "refused"],
    ["a/../../escape.txt", "refused"],
    ["./here.txt", "refused"],
    // a name starting with '.' is skipped like every dot-name
    [".hidden/escape.txt", "skipped"],
  ];
  for (const [path, fate] of cases) {
    it(`${fate === "refused" ? "refuses" : "skips"} the listed path ${JSON.stringify(path)}, never downloading it or writing outside the cache root`, async () => {
      const hub = await FakeHub.serve("acme/evil", FIXTURE_DIR, { [path]: "gotcha" });
      const t = await startTestServer({ hubUrl: hub.url });
      try {
        await call(t.client, "registerModel", { model: modelSpec({ source: "acme/evil" }) });
        const outcome = await pull(t.client, { name: "minilm" });
        if (fate === "refused") {
          expect(outcome.error?.code).to.equal(status.FAILED_PRECONDITION);
          expect(outcome.error?.details).to.include("the hub's listing").and.include("file path");
          expect(hub.requests.filter((r) => r.path.includes("/resolve/") || r.path.startsWith("/lfs/"))).to.deep.equal([]);
        } else {
          expect(outcome.error).to.equal(undefined);
          expect(hub.requests.filter((r) => r.path.includes("escape"))).to.deep.equal([]);
        }
        const outside = await strayFiles(t.dataDir);
        expect(outside).to.deep.equal([]);
        expect((await filesBelow(t.dataDir)).filter((f) => f.includes("escape") || f.includes("abs.txt"))).to.deep.equal([]);
      } finally {
        await t.close();
        await hub.close();
      }
    });
  }
});
