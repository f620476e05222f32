// `npm run docs`: writes the flag and metric tables of docs/configuration.md
// and docs/metrics.md from the code (scripts/reference-docs.ts).
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { configurationReference, metricsReference, withBlock } from "./reference-docs.js";

const root = join(import.meta.dirname, "..");
for (const [file, block] of [
  ["docs/configuration.md", await configurationReference()],
  ["docs/metrics.md", await metricsReference()],
] as const) {
  const path = join(root, file);
  const before = await readFile(path, "utf8");
  const after = withBlock(before, block, file);
  if (after !== before) await writeFile(path, after);
  process.stdout.write(`${file}: ${after === before ? "up to date" : "written"}\n`);
}
// the CLI module keeps its stdout handler and the server module its timers: nothing is left to wait for
process.exit(0);
