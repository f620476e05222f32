// deploy/grafana/modelcache.json and deploy/prometheus/alerts.yaml against a
// running server: every metric their queries name is one /metrics exports, and
// every query parses as PromQL. The parser is the Prometheus project's own
// grammar (@prometheus-io/lezer-promql, what the Prometheus UI edits queries
// with): it checks syntax, not types (rate() of a gauge would pass).
import { expect } from "chai";
import { parser } from "@prometheus-io/lezer-promql";
import { parse as parseYaml } from "yaml";
import { readRepoFile } from "../support/deploy-files.js";
import { startTestServer } from "../support/test-server.js";

/**
 * Metrics that other exporters provide, not modelcache: `up` is what Prometheus
 * records for every scrape target. Free space is the server's own gauge
 * (modelcache_capacity_bytes), whose instance label is the one the dashboard's
 * variable selects; node_exporter's would carry another.
 */
const ELSEWHERE = new Set(["up"]);

/** The metric families a fresh server exports, by name, with their type. */
async function exportedFamilies(): Promise<Map<string, string>> {
  const t = await startTestServer({ metricsListen: "127.0.0.1:0" });
  try {
    const page = await (await fetch(`http://${t.server.metricsAddress}/metrics`)).text();
    return new Map([...page.matchAll(/^# TYPE (\w+) (\w+)$/gm)].map((m) => [m[1]!, m[2]!]));
  } finally {
    await t.close();
  }
}

/** The metric names a PromQL expression selects; throws naming the position of a syntax error. */
function metricNames(expr: string): string[] {
  const names: string[] = [];
  const errors: number[] = [];
  parser.parse(expr).iterate({
    enter: (node) => {
      if (node.type.isError) errors.push(node.from);
      else if (node.name === "Identifier" && node.node.parent?.name === "VectorSelector") names.push(expr.slice(node.from, node.to));
    },
  });
  if (errors.length > 0) throw new Error(`PromQL syntax error at ${errors[0]} in: ${expr}`);
  return names;
}

/** The family a sample name belongs to: a histogram's _bucket, _sum and _count are its family's. */
function family(name: string, families: Map<string, string>): string | undefined {
  if (families.has(name)) return name;
  const base = name.replace(/_(bucket|sum|count)$/, "");
  return families.get(base) === "histogram" ? base : undefined;
}

/** Grafana's variables made plain PromQL: $__rate_interval a duration, the others a number (inside label strings they stay text). */
const withoutVariables = (expr: string) => expr.replaceAll("$__rate_interval", "5m").replace(/\$\{?(\w+)\}?/g, "0");

describe("deploy/grafana and deploy/prometheus", () => {
  let families: Map<string, string>;
  before(async () => {
    families = await exportedFamilies();
    expect(families.has("modelcache_pulls_total")).to.equal(true);
  });
  const unknown = (names: string[]) => [...new Set(names)].filter((name) => !ELSEWHERE.has(name) && family(name, families) === undefined);

  it("builds the dashboard's queries only from metrics /metrics exports, each parsing as PromQL", async () => {
    const dashboard = JSON.parse(await readRepoFile("deploy/grafana/modelcache.json")) as {
      panels: { title: string; type: string; targets?: { expr: string }[] }[];
      templating: { list: { name: string; definition?: string }[] };
    };
    const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
    expect(exprs.length).to.be.greaterThan(15);
    const used = exprs.flatMap((expr) => metricNames(withoutVariables(expr)));
    for (const variable of dashboard.templating.list) {
      const query = /^label_values\((\w+),/.exec(variable.definition ?? "");
      if (query) used.push(query[1]!);
    }
    expect(unknown(used), "metrics the dashboard queries that the server does not export").to.deep.equal([]);

    // what an operator looks at: pulls, bytes by origin, capacity, evictions, leases, integrity, the hub endpoint, gRPC latency
    const families = new Set(used.map((name) => name.replace(/_(bucket|sum|count)$/, "")));
    for (const wanted of [
      "modelcache_pulls_total",
      "modelcache_pull_duration_seconds",
      "modelcache_pull_bytes_total",
      "modelcache_reused_bytes_total",
      "modelcache_store_bytes",
      "modelcache_capacity_bytes",
      "modelcache_evictions_total",
      "modelcache_corrupt_files_total",
      "modelcache_repairs_total",
      "modelcache_hub_requests_total",
      "modelcache_hub_sent_bytes_total",
      "grpc_server_handling_seconds",
    ]) {
      expect([...families], wanted).to.include(wanted);
    }
    expect(exprs.some((e) => e.includes("ResolveModel|ReleaseLease")), "a panel of leases taken and released").to.equal(true);
  });

  it("imports into Grafana: a datasource variable every query uses, unique panel ids, panels that fit the grid and overlap nowhere", async () => {
    const dashboard = JSON.parse(await readRepoFile("deploy/grafana/modelcache.json")) as {
      schemaVersion: number;
      uid: string;
      panels: { id: number; title: string; type: string; gridPos: { x: number; y: number; w: number; h: number }; datasource?: { uid: string }; targets?: { datasource?: { uid: string } }[] }[];
      templating: { list: { name: string; type: string }[] };
    };
    expect(dashboard.schemaVersion).to.be.at.least(36);
    expect(dashboard.uid).to.match(/^[\w-]{1,40}$/);
    expect(dashboard.templating.list.find((v) => v.type === "datasource")?.name).to.equal("datasource");
    const ids = dashboard.panels.map((p) => p.id);
    expect(ids.every((id) => Number.isInteger(id) && id > 0), "every panel has an id").to.equal(true);
    expect(new Set(ids).size, "panel ids are unique").to.equal(ids.length);
    const taken = new Map<string, string>();
    for (const panel of dashboard.panels) {
      const { x, y, w, h } = panel.gridPos;
      expect(x + w, `${panel.title} fits the 24 columns`).to.be.at.most(24);
      for (let col = x; col < x + w; col++) {
        for (let row = y; row < y + h; row++) {
          expect(taken.get(`${col},${row}`), `${panel.title} overlaps`).to.equal(undefined);
          taken.set(`${col},${row}`, panel.title);
        }
      }
      if (panel.type === "row") continue;
      expect(panel.datasource?.uid, panel.title).to.equal("${datasource}");
      for (const target of panel.targets ?? []) expect(target.datasource?.uid, panel.title).to.equal("${datasource}");
    }
  });

  it("alerts with rules that parse as PromQL over metrics /metrics exports, one for each failure an operator must hear of", async () => {
    const rules = (parseYaml(await readRepoFile("deploy/prometheus/alerts.yaml")) as { groups: { rules: { alert: string; expr: string; for?: string; labels: { severity: string }; annotations: { summary: string } }[] }[] }).groups.flatMap((g) => g.rules);
    expect(rules.map((r) => r.alert)).to.have.members([
      "ModelcacheDown",
      "ModelcacheDiskFillingUp",
      "ModelcachePullsFailing",
      "ModelcacheCorruptContent",
      "ModelcacheVerificationStalled",
      "ModelcacheModelsFileFailing",
    ]);
    const used = rules.flatMap((rule) => metricNames(rule.expr));
    expect(unknown(used), "metrics the alerts use that the server does not export").to.deep.equal([]);
    for (const rule of rules) {
      if (rule.for !== undefined) expect(rule.for, rule.alert).to.match(/^\d+[smhd]$/);
      expect(rule.labels.severity, rule.alert).to.be.oneOf(["critical", "warning"]);
      expect(rule.annotations.summary, rule.alert).to.be.a("string");
    }
    // the pull results the rule counts are ones the server labels pulls with
    expect(rules.find((r) => r.alert === "ModelcachePullsFailing")!.expr).to.include('result="failed"');
  });

  it("names the syntax error of a query that does not parse", () => {
    expect(() => metricNames("sum(rate(modelcache_pulls_total[5m]) by (result)")).to.throw(/PromQL syntax error at \d+/);
  });
});
