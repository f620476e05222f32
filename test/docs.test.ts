// The README and SECURITY.md say what the code does: the lists a reader
// looks things up in are checked against the running server and the CLI.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { expect } from "chai";
import { EXIT } from "../src/cli/client.js";
import { runCli } from "./support/run-cli.js";
import { startTestServer } from "./support/test-server.js";

const ROOT = join(import.meta.dirname, "..");
const read = (file: string) => readFile(join(ROOT, file), "utf8");

describe("the docs", () => {
  it("name every metric the server exports in the README", async () => {
    const t = await startTestServer({ metricsListen: "127.0.0.1:0" });
    try {
      const page = await (await fetch(`http://${t.server.metricsAddress}/metrics`)).text();
      const names = [...page.matchAll(/^# TYPE (\w+) /gm)].map((m) => m[1]!).filter((name) => /^(modelcache|grpc_server)_/.test(name));
      expect(names).to.include("modelcache_store_bytes");
      const readme = await read("README.md");
      expect(names.filter((name) => !readme.includes(`\`${name}`))).to.deep.equal([]);
    } finally {
      await t.close();
    }
  });

  it("list every exit code of the client commands in the README", async () => {
    const readme = await read("README.md");
    const sentence = /Exit codes: ([^]*?interrupted)/.exec(readme)![1]!;
    for (const [what, code] of Object.entries(EXIT)) expect(sentence, what).to.match(new RegExp(`\\b${code} `));
  });

  it("give serve's default --max-concurrent-streams in SECURITY.md", async () => {
    const help = (await runCli("", ["serve", "--help"])).stdout;
    const streams = /--max-concurrent-streams <n>[^]*?\(default: "(\d+)"/.exec(help)![1]!;
    expect(await read("SECURITY.md")).to.include(`\`--max-concurrent-streams\` per connection (${streams})`);
  });

  it("explain the spec fields a Model carries but no RPC explains", async () => {
    const readme = await read("README.md");
    for (const field of ["provider", "engine", "trust_policy", "acknowledge_remote_code_risk"]) expect(readme, field).to.match(new RegExp(`^- \`${field}\` `, "m"));
  });
});
