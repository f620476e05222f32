// The Python example (examples/python/) against a real server: its client is
// generated from proto/ with protoc and grpcio's plugin, as the example's README
// says, then it resolves a model under a lease, reads config.json and releases
// the lease. Debian's python3-grpcio, protobuf-compiler, protobuf-compiler-grpc
// and libprotobuf-dev (.ci/run installs them); /usr/bin/python3, not whatever
// python3 comes first on PATH (a pyenv shim has no grpc).
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { expect } from "chai";
import { FIXTURE_DIR, type TestServer, call, modelSpec, startTestServer } from "./support/test-server.js";

const run = promisify(execFile);
const EXAMPLE = join(import.meta.dirname, "..", "examples", "python");
const PYTHON = "/usr/bin/python3";

describe("the Python client example", () => {
  let generated: string;
  let t: TestServer;
  before(async () => {
    generated = await mkdtemp(join(tmpdir(), "modelcache-python-"));
    await run(join(EXAMPLE, "generate.sh"), [generated]).catch((err: { stderr: string }) => {
      throw new Error(`examples/python/generate.sh failed (Debian's protobuf-compiler, protobuf-compiler-grpc and libprotobuf-dev: .ci/run installs them): ${err.stderr}`);
    });
    await run(PYTHON, ["-c", "import grpc"]).catch(() => {
      throw new Error(`${PYTHON} cannot import grpc: install Debian's python3-grpcio (.ci/run does)`);
    });
  });
  after(() => rm(generated, { recursive: true, force: true }));
  beforeEach(async () => {
    t = await startTestServer({ fixtureDir: FIXTURE_DIR });
    await call(t.client, "registerModel", { model: modelSpec() });
  });
  afterEach(() => t.close());
  const resolve = (name: string) =>
    run(PYTHON, [join(EXAMPLE, "resolve.py"), t.server.address, name], { env: { ...process.env, PYTHONPATH: generated } }).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (err: { code: number; stdout: string; stderr: string }) => err,
    );

  it("resolves the model under a lease, reads config.json from the path, and releases the lease", async () => {
    const first = await resolve("minilm");
    expect(first.code, first.stderr).to.equal(0);
    expect(first.stdout).to.match(/^minilm at .*ai_models_cache\/minilm \(pulled now\), lease \S+ until \d{4}-\d\d-\d\dT/);
    expect(first.stdout).to.match(/config\.json has \d+ keys/);
    expect(first.stdout).to.include("lease released: true");
    expect((await call(t.client, "getModel", { name: "minilm" })).model!.leases).to.equal(0);
    const second = await resolve("minilm");
    expect(second.stdout).to.include("(already installed)");
  });

  it("fails with one line naming the status and the cause for a model that is not registered", async () => {
    const failed = await resolve("ghost");
    expect(failed.code).to.equal(1);
    expect(failed.stderr.trim()).to.equal("error: NOT_FOUND: local AI model 'ghost' is not registered");
  });
});
