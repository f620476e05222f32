// The server's settings, resolved before anything opens: defaults, each bad
// option refused naming its flag, and nothing created on disk by checking.
import { access, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { ModelCacheError } from "../src/errors.js";
import { type ServerOptions, resolveSettings } from "../src/server/server-settings.js";

describe("server settings", () => {
  let root: string;
  let dataDir: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "modelcache-settings-"));
    dataDir = join(root, "data");
  });
  afterEach(() => rm(root, { recursive: true, force: true }));

  const refusal = async (options: Partial<ServerOptions>): Promise<ModelCacheError> => {
    const err = await resolveSettings({ listen: "127.0.0.1:0", dataDir, ...options }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err, JSON.stringify(options)).to.be.instanceOf(ModelCacheError);
    return err as ModelCacheError;
  };

  it("gives the documented defaults and creates nothing", async () => {
    const settings = await resolveSettings({ listen: "127.0.0.1:0", dataDir });
    expect(settings).to.deep.include({
      dataDir,
      cacheRoot: join(dataDir, "ai_models_cache"),
      maxConcurrentPulls: 2,
      maxLeaseSeconds: 86_400,
      maxStreams: 256,
      maxMessageBytes: 4 * 1024 * 1024,
      verification: undefined,
      authenticated: false,
    });
    expect(settings.capacity).to.deep.equal({ maxBytes: 0, minFreeBytes: 1024 ** 3 });
    expect(settings.hub).to.deep.include({ url: "https://huggingface.co/", offline: false });
    expect(settings.s3.region).to.equal("us-east-1");
    // checking is not opening: the data dir is made by start, not here
    expect(await access(dataDir).then(() => "exists", () => "absent")).to.equal("absent");
  });

  it("refuses each bad option with INVALID_ARGUMENT naming its flag", async () => {
    const cases: [Partial<ServerOptions>, string][] = [
      [{ listen: "nowhere" }, "--listen"],
      [{ metricsListen: "127.0.0.1:99999" }, "--metrics-listen"],
      [{ maxLeaseSeconds: 0 }, "--max-lease-seconds"],
      [{ cacheMaxBytes: -1 }, "--cache-max-bytes"],
      [{ minFreeBytes: 1.5 }, "--min-free-bytes"],
      [{ verifyIntervalMs: 0 }, "--verify-interval"],
      [{ verifyIntervalMs: 1000, verifyBytesPerSecond: 0 }, "--verify-bytes-per-second"],
      [{ maxConcurrentPulls: 0 }, "--max-concurrent-pulls"],
      [{ hubUrl: "ftp://hub.example" }, "--hub-url"],
      [{ hubUrl: "not a url" }, "--hub-url"],
      [{ maxBytesPerSecond: 10 }, "--max-bytes-per-second"],
      [{ parallelRangeMinBytes: 1024 }, "--parallel-range-min-bytes"],
      [{ parallelRangeBelowBytesPerSecond: -1 }, "--parallel-range-below-bytes-per-second"],
      [{ s3Endpoint: "minio:9000" }, "--s3-endpoint"],
      [{ s3Region: "US East" }, "--s3-region"],
      [{ maxConcurrentStreams: 0 }, "--max-concurrent-streams"],
      [{ pullLimits: { maxFiles: 0 } }, "--max-files-per-pull"],
    ];
    for (const [options, flag] of cases) {
      const err = await refusal(options);
      expect(err.kind, flag).to.equal("invalid_argument");
      expect(err.message, flag).to.include(flag);
    }
    expect(await access(dataDir).then(() => "exists", () => "absent")).to.equal("absent");
  });

  it("resolves relative paths and takes a separate cache dir", async () => {
    const settings = await resolveSettings({ listen: "127.0.0.1:0", dataDir: "relative-data", cacheDir: join(root, "cache"), verifyIntervalMs: 60_000 });
    expect(settings.dataDir).to.equal(join(process.cwd(), "relative-data"));
    expect(settings.cacheRoot).to.equal(join(root, "cache"));
    expect(settings.verification).to.deep.equal({ intervalMs: 60_000, bytesPerSecond: 100 * 2 ** 20 });
    expect(settings.autoRepair).to.equal(true);
    expect(settings.hub.directWrites, "downloads written around the page cache unless --no-direct-writes").to.equal(true);
  });
});
