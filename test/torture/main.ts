// npm run torture [-- --cycles N --seed S]: the crash torture, outside npm
// test (a short run of it is inside). Exits 1 with the failing cycle, the
// seed to replay it and where the server's log was kept.
import { parseArgs } from "node:util";
import { runTorture } from "./torture.js";

const { values } = parseArgs({
  options: {
    cycles: { type: "string", default: "50" },
    seed: { type: "string", default: String(Date.now() % 2 ** 31) },
    "kill-window-ms": { type: "string", default: "900" },
  },
});
const cycles = Number(values.cycles);
const seed = Number(values.seed);
const killWindowMs = Number(values["kill-window-ms"]);
for (const [flag, value] of [["--cycles", cycles], ["--seed", seed], ["--kill-window-ms", killWindowMs]] as const) {
  if (!Number.isSafeInteger(value) || value < 0) {
    process.stderr.write(`${flag} must be a whole number >= 0\n`);
    process.exit(2);
  }
}
process.stdout.write(`torture: ${cycles} cycles, seed ${seed}\n`);
try {
  const result = await runTorture({ cycles, seed, killWindowMs, report: (line) => process.stdout.write(`${line}\n`) });
  const mix = Object.entries(result.operations).map(([op, n]) => `${op} ${n}`).join(", ");
  process.stdout.write(`capacity rounds: ${result.capacityRounds}, violations: ${result.violations.length}\n`);
  for (const violation of result.violations) process.stdout.write(`  violation: ${violation}\n`);
  if (result.violations.length > 0) {
    process.stderr.write(`torture FAILED: ${result.violations.length} violations, seed ${seed}\n`);
    process.exit(1);
  }
  process.stdout.write(`torture passed: ${result.cycles} cycles (${result.killedMidway} killed mid-operation; ${mix}), seed ${seed}\n`);
} catch (err) {
  process.stderr.write(`torture FAILED: ${(err as Error).message}\n`);
  process.exit(1);
}
