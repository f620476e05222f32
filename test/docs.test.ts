// The docs say what the code does: the README is the entry and the map, the
// references in docs/ are written from the code (`npm run docs`) and checked
// against the running server and the CLI, and every link leads somewhere.
import { readdir, readFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { expect } from "chai";
import { EXIT } from "../src/cli/client.js";
import { blockOf, configurationReference, flagRows, metricsReference } from "../scripts/reference-docs.js";
import { runCli } from "./support/run-cli.js";
import { startTestServer } from "./support/test-server.js";

const ROOT = join(import.meta.dirname, "..");
const read = (file: string) => readFile(join(ROOT, file), "utf8");
const longFlag = (flags: string) => /--[a-z0-9-]+/.exec(flags)![0];

/** What is in one list and not the other, by name, so that a failure says exactly what to add or remove. */
function difference(inCode: string[], inDoc: string[]): { missingFromDoc: string[]; notInCode: string[] } {
  return { missingFromDoc: inCode.filter((n) => !inDoc.includes(n)), notInCode: inDoc.filter((n) => !inCode.includes(n)) };
}

/** GitHub's anchor of a heading. */
const slug = (heading: string) =>
  heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, "")
    .replace(/\s/g, "-");

describe("the docs", () => {
  it("name every metric the server exports in docs/metrics.md, and no other", async () => {
    const t = await startTestServer({ metricsListen: "127.0.0.1:0" });
    try {
      const page = await (await fetch(`http://${t.server.metricsAddress}/metrics`)).text();
      const names = [...page.matchAll(/^# TYPE (\w+) /gm)].map((m) => m[1]!).filter((name) => /^(modelcache|grpc_server)_/.test(name));
      expect(names).to.include("modelcache_store_bytes");
      const documented = [...blockOf(await read("docs/metrics.md")).matchAll(/^\| `(\w+)` \|/gm)].map((m) => m[1]!);
      expect(difference(names, documented), "docs/metrics.md against /metrics: run `npm run docs`").to.deep.equal({ missingFromDoc: [], notInCode: [] });
    } finally {
      await t.close();
    }
  });

  it("list every flag of serve and of the client commands in docs/configuration.md, and no other", async () => {
    const { serve, client } = await flagRows();
    const inCode = [...serve, ...client].map((row) => longFlag(row.flag));
    expect(inCode).to.include("--listen").and.include("--address");
    const documented = [...blockOf(await read("docs/configuration.md")).matchAll(/^\| `(--[a-z0-9-]+)/gm)].map((m) => m[1]!);
    expect(difference(inCode, documented), "docs/configuration.md against src/cli/main.ts: run `npm run docs`").to.deep.equal({ missingFromDoc: [], notInCode: [] });
    // the notes below the table speak only of flags that exist
    const notes = [...(await read("docs/configuration.md")).matchAll(/^- `(--[a-z0-9-]+)`/gm)].map((m) => m[1]!);
    expect(notes.filter((flag) => !inCode.includes(flag)), "notes on flags the CLI does not have").to.deep.equal([]);
  });

  it("keep the generated tables as `npm run docs` writes them: defaults, variables and descriptions included", async () => {
    expect(blockOf(await read("docs/configuration.md")), "docs/configuration.md: run `npm run docs`").to.equal(await configurationReference());
    expect(blockOf(await read("docs/metrics.md")), "docs/metrics.md: run `npm run docs`").to.equal(await metricsReference());
  });

  it("list every exit code of the client commands in docs/operating.md", async () => {
    const doc = await read("docs/operating.md");
    const sentence = /Exit codes: ([^]*?interrupted)/.exec(doc)![1]!;
    for (const [what, code] of Object.entries(EXIT)) expect(sentence, what).to.match(new RegExp(`\\b${code} `));
  });

  it("give serve's default --max-concurrent-streams in SECURITY.md", async () => {
    const help = (await runCli("", ["serve", "--help"])).stdout;
    const streams = /--max-concurrent-streams <n>[^]*?\(default: "(\d+)"/.exec(help)![1]!;
    expect(await read("SECURITY.md")).to.include(`\`--max-concurrent-streams\` per connection (${streams})`);
  });

  it("explain the spec fields a Model carries but no RPC explains", async () => {
    const doc = await read("docs/serving.md");
    for (const field of ["provider", "engine", "trust_policy", "acknowledge_remote_code_risk"]) expect(doc, field).to.match(new RegExp(`^- \`${field}\` `, "m"));
  });

  it("start the README with the two commands, then map every document in docs/ and every deploy file", async () => {
    const readme = await read("README.md");
    const beforeFirstSection = readme.slice(0, readme.indexOf("\n## "));
    for (const command of ["npm install", "npm start", "npm test"]) expect(beforeFirstSection, command).to.include(`\n${command} `);
    const docs = (await readdir(join(ROOT, "docs"))).filter((f) => f.endsWith(".md"));
    expect(docs.filter((file) => !readme.includes(`](docs/${file})`)), "docs the README's map leaves out").to.deep.equal([]);
    const deploying = readme.slice(readme.indexOf("\n## Deploying\n"));
    const deployFiles = ["deploy/Dockerfile", "deploy/kubernetes/", "deploy/systemd/modelcache.service", "deploy/grafana/modelcache.json", "deploy/prometheus/alerts.yaml"];
    for (const file of deployFiles) expect(deploying, file).to.include(`[\`${file.replace(/\/$/, "")}`);
  });

  it("link only to files and headings that exist, from the README, docs/ and the other top-level docs", async () => {
    const files = ["README.md", "SECURITY.md", "BENCHMARKS.md", "examples/python/README.md", ...(await readdir(join(ROOT, "docs"))).filter((f) => f.endsWith(".md")).map((f) => `docs/${f}`)];
    const anchors = async (file: string) => new Set([...(await read(file)).replace(/```[^]*?```/g, "").matchAll(/^#+ (.*)$/gm)].map((m) => slug(m[1]!)));
    const broken: string[] = [];
    for (const file of files) {
      const text = (await read(file)).replace(/```[^]*?```/g, "");
      for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z]+:/.test(target!)) continue;
        const [path, anchor] = target!.split("#") as [string, string | undefined];
        const resolved = path === "" ? file : relative(ROOT, join(ROOT, dirname(file), path));
        if (!existsSync(join(ROOT, resolved))) broken.push(`${file}: ${target} (no such file)`);
        else if (anchor !== undefined && resolved.endsWith(".md") && !(await anchors(resolved)).has(anchor)) broken.push(`${file}: ${target} (no such heading)`);
      }
    }
    expect(broken).to.deep.equal([]);
  });
});
