// deploy/prometheus/alerts.yaml as Prometheus evaluates it: promtool checks the
// rules and runs them over made-up series (`promtool test rules`), so that each
// alert fires when its failure happens and stays quiet when it does not. Needs
// promtool (Debian's prometheus package, about 100 MB, so CI does not install
// it): skipped without it.
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { expect } from "chai";
import { parse as parseYaml, stringify } from "yaml";
import { ROOT, readRepoFile } from "../support/deploy-files.js";

const run = promisify(execFile);
const RULES = join(ROOT, "deploy", "prometheus", "alerts.yaml");
const GiB = 2 ** 30;

interface Rule {
  alert: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

/** promtool's path, or undefined when it is not installed. */
async function promtool(): Promise<string | undefined> {
  return run("promtool", ["--version"]).then(
    () => "promtool",
    () => undefined,
  );
}

/** A series in promtool's notation: the same value every minute, or values given minute by minute. */
const series = (name: string, labels: Record<string, string>, values: string) => ({
  series: `${name}{${Object.entries({ job: "modelcache", ...labels })
    .map(([k, v]) => `${k}="${v}"`)
    .join(",")}}`,
  values,
});

describe("deploy/prometheus/alerts.yaml under promtool", function () {
  let rules: Map<string, Rule>;
  let dir: string;
  before(async function () {
    if ((await promtool()) === undefined) this.skip(); // promtool not installed (apt-get install prometheus)
    const file = parseYaml(await readRepoFile("deploy/prometheus/alerts.yaml")) as { groups: { rules: Rule[] }[] };
    rules = new Map(file.groups.flatMap((g) => g.rules).map((r) => [r.alert, r]));
    dir = await mkdtemp(join(tmpdir(), "modelcache-alerts-"));
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** The alert `name` as firing for `instance`: its labels and its annotations with the instance filled in. */
  function firing(name: string, instance: string) {
    const rule = rules.get(name)!;
    return {
      exp_labels: { ...rule.labels, job: "modelcache", instance },
      exp_annotations: Object.fromEntries(Object.entries(rule.annotations).map(([k, v]) => [k, v.replaceAll("{{ $labels.instance }}", instance)])),
    };
  }

  /** Runs `promtool test rules` over the rules with these series and expectations; resolves with its output. */
  async function testRules(input_series: object[], alert_rule_test: object[]): Promise<string> {
    const file = join(dir, `test-${Math.random().toString(36).slice(2)}.yaml`);
    await writeFile(file, stringify({ rule_files: [RULES], evaluation_interval: "1m", tests: [{ interval: "1m", input_series, alert_rule_test }] }));
    return run("promtool", ["test", "rules", file]).then(
      (r) => r.stdout,
      (err: { stdout: string; stderr: string }) => {
        throw new Error(`promtool test rules failed:\n${err.stdout}${err.stderr}`);
      },
    );
  }

  it("passes promtool check rules", async () => {
    const { stdout } = await run("promtool", ["check", "rules", RULES]);
    expect(stdout).to.include("SUCCESS");
  });

  it("alerts on stalled verification only on servers with --verify-interval, counting from the start, not from the epoch", async () => {
    const hour = 3600;
    await testRules(
      [
        // off: no interval, never a pass
        series("modelcache_verify_interval_seconds", { instance: "off" }, "0x400"),
        series("modelcache_verify_last_full_pass_timestamp_seconds", { instance: "off" }, "0x400"),
        series("modelcache_start_time_seconds", { instance: "off" }, "0x400"),
        // every hour, never a pass
        series("modelcache_verify_interval_seconds", { instance: "stuck" }, `${hour}x400`),
        series("modelcache_verify_last_full_pass_timestamp_seconds", { instance: "stuck" }, "0x400"),
        series("modelcache_start_time_seconds", { instance: "stuck" }, "0x400"),
        // every hour, a pass ending every 70 minutes (an hour's wait, then 10 minutes of hashing)
        series("modelcache_verify_interval_seconds", { instance: "passing" }, `${hour}x400`),
        series("modelcache_verify_last_full_pass_timestamp_seconds", { instance: "passing" }, [0, 4200, 8400, 12600, 16800, 21000].map((v) => `${v}x69`).join(" ")),
        series("modelcache_start_time_seconds", { instance: "passing" }, "0x400"),
        // restarted 5 hours in: no pass since, which is not yet late
        series("modelcache_verify_interval_seconds", { instance: "restarted" }, `${hour}x400`),
        series("modelcache_verify_last_full_pass_timestamp_seconds", { instance: "restarted" }, "0x400"),
        series("modelcache_start_time_seconds", { instance: "restarted" }, `0x299 ${5 * hour}x100`),
      ],
      [
        // two intervals without a pass, but not yet for the rule's hour
        { eval_time: "2h30m", alertname: "ModelcacheVerificationStalled", exp_alerts: [] },
        { eval_time: "5h30m", alertname: "ModelcacheVerificationStalled", exp_alerts: [firing("ModelcacheVerificationStalled", "stuck")] },
      ],
    );
  });

  it("alerts on a disk filling towards the server's own free floor, not on one that keeps above it", async () => {
    const floor = GiB;
    const filling = firing("ModelcacheDiskFillingUp", "filling");
    await testRules(
      [
        // 10 GiB free, 100 MiB less every minute
        series("modelcache_capacity_bytes", { instance: "filling", kind: "free" }, `${10 * GiB}-${100 * 2 ** 20}x90`),
        series("modelcache_capacity_bytes", { instance: "filling", kind: "min_free" }, `${floor}x90`),
        // full but flat, above its floor
        series("modelcache_capacity_bytes", { instance: "steady", kind: "free" }, `${2 * GiB}x90`),
        series("modelcache_capacity_bytes", { instance: "steady", kind: "min_free" }, `${floor}x90`),
      ],
      [
        // the floor is an hour away after 33 minutes, and the rule waits 15 more
        { eval_time: "40m", alertname: "ModelcacheDiskFillingUp", exp_alerts: [] },
        { eval_time: "60m", alertname: "ModelcacheDiskFillingUp", exp_alerts: [filling] },
      ],
    );
  });

  it("alerts at once on corrupt content and on a models file that failed to apply, and not on servers with neither", async () => {
    await testRules(
      [
        series("modelcache_corrupt_files_total", { instance: "rotting" }, "0x10 1x20"),
        series("modelcache_corrupt_files_total", { instance: "sound" }, "0x30"),
        series("modelcache_models_file_failing", { instance: "typo" }, "0x10 1x20"),
        series("modelcache_models_file_failing", { instance: "sound" }, "0x30"),
      ],
      [
        { eval_time: "5m", alertname: "ModelcacheCorruptContent", exp_alerts: [] },
        { eval_time: "12m", alertname: "ModelcacheCorruptContent", exp_alerts: [firing("ModelcacheCorruptContent", "rotting")] },
        { eval_time: "12m", alertname: "ModelcacheModelsFileFailing", exp_alerts: [firing("ModelcacheModelsFileFailing", "typo")] },
      ],
    );
  });

  it("keeps alerting on a models file that failed to apply for as long as it stays unapplied, and stops once it applies or the edit is undone", async () => {
    await testRules(
      [series("modelcache_models_file_failing", { instance: "typo" }, "0x5 1x60 0x10")],
      [
        { eval_time: "3m", alertname: "ModelcacheModelsFileFailing", exp_alerts: [] },
        // an hour after the failed edit, nothing applied since: still firing
        { eval_time: "60m", alertname: "ModelcacheModelsFileFailing", exp_alerts: [firing("ModelcacheModelsFileFailing", "typo")] },
        { eval_time: "70m", alertname: "ModelcacheModelsFileFailing", exp_alerts: [] },
      ],
    );
  });

  it("alerts on a server Prometheus cannot scrape for 5 minutes", async () => {
    await testRules(
      [series("up", { instance: "gone" }, "1x5 0x20"), series("up", { instance: "fine" }, "1x25")],
      [
        { eval_time: "8m", alertname: "ModelcacheDown", exp_alerts: [] },
        { eval_time: "12m", alertname: "ModelcacheDown", exp_alerts: [firing("ModelcacheDown", "gone")] },
      ],
    );
  });
});
