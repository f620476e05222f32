// Prometheus metrics (prom-client), served as text at /metrics on
// --metrics-listen. RPC metrics carry the names the gRPC ecosystem's
// dashboards expect; domain metrics are modelcache_*. Gauges are read from
// the registry and the job table when scraped, so they never drift.
import type { EvictionReason, EvictionRecorder } from "../capacity/capacity.js";
import type { VerificationRecorder } from "../maintenance/background-verification.js";
import type { RepairRecorder } from "../maintenance/repairs.js";
import { statfs } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { RpcRecorder } from "../grpc/adapt-call.js";
import { methodOf, serviceOf } from "../grpc/method-path.js";
import type { PullRecorder, PullResult } from "../pull/pull-job.js";
import { cacheBytes } from "../cache/cache-bytes.js";
import { filesystemError } from "../errors.js";
import type { Runtime } from "../runtime.js";
import type { ModelsFileRecorder } from "../models-file/watch-models-file.js";
import type { HubRecorder } from "../hub-endpoint/hub-server.js";
import type { PeerRecorder } from "../peers/peer-recorder.js";
import type { PeerErrorReason } from "../peers/peer-http.js";

export class Metrics implements RpcRecorder, PullRecorder, ModelsFileRecorder, EvictionRecorder, VerificationRecorder, RepairRecorder, HubRecorder, PeerRecorder {
  readonly registry = new Registry();
  private readonly rpcStarted = new Counter({ name: "grpc_server_started_total", help: "RPCs started on the server.", labelNames: ["grpc_service", "grpc_method", "grpc_type"], registers: [this.registry] });
  private readonly rpcHandled = new Counter({ name: "grpc_server_handled_total", help: "RPCs completed on the server, by status code.", labelNames: ["grpc_service", "grpc_method", "grpc_type", "grpc_code"], registers: [this.registry] });
  private readonly rpcSeconds = new Histogram({ name: "grpc_server_handling_seconds", help: "Time from the start of an RPC to its status.", labelNames: ["grpc_service", "grpc_method", "grpc_type"], buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600], registers: [this.registry] });
  private readonly rpcSeriesByMethod = new Map<string, { labels: Record<"grpc_service" | "grpc_method" | "grpc_type", string>; started: { inc(): void }; handled: Map<string, { inc(): void }>; seconds: { observe(value: number): void } }>();
  private readonly pulls = new Counter({ name: "modelcache_pulls_total", help: "Pull jobs ended, by result.", labelNames: ["result"], registers: [this.registry] });
  private readonly modelsFileErrors = new Counter({ name: "modelcache_models_file_errors_total", help: "Versions of the models file that could not be read, validated or applied.", registers: [this.registry] });
  private readonly modelsFileFailing = new Gauge({ name: "modelcache_models_file_failing", help: "1 while the models file's current text could not be read, validated or applied (the models stay as the last good version left them), else 0.", registers: [this.registry] });
  private readonly lastModelsFileApply = new Gauge({ name: "modelcache_models_file_applied_timestamp_seconds", help: "When the models file was last applied without error (Unix seconds).", registers: [this.registry] });
  private readonly pullBytes = new Counter({ name: "modelcache_pull_bytes_total", help: "Bytes pull jobs installed, whether fetched, copied or taken from the content store.", registers: [this.registry] });
  private readonly evictions = new Counter({ name: "modelcache_evictions_total", help: "Installs evicted to make room, by reason: quota (--cache-max-bytes) or min_free (--min-free-bytes).", labelNames: ["reason"], registers: [this.registry] });
  private readonly corruptFiles = new Counter({ name: "modelcache_corrupt_files_total", help: "Stored contents found corrupt (by the background verification, a pull, adoption or a deep InspectCache) and condemned.", registers: [this.registry] });
  private readonly verifyBytes = new Counter({ name: "modelcache_verify_bytes_total", help: "Bytes of stored content the background verification hashed again.", registers: [this.registry] });
  private readonly lastVerifyPass = new Gauge({ name: "modelcache_verify_last_full_pass_timestamp_seconds", help: "When the background verification last finished a pass over every stored content (Unix seconds).", registers: [this.registry] });
  private readonly repairs = new Counter({ name: "modelcache_repairs_total", help: "Background pulls of models whose content was found corrupt, by result.", labelNames: ["result"], registers: [this.registry] });
  private readonly reusedBytes = new Counter({ name: "modelcache_reused_bytes_total", help: "Bytes pulls took from the content store instead of fetching or writing them.", registers: [this.registry] });
  private readonly hubRequests = new Counter({ name: "modelcache_hub_requests_total", help: "Requests to the hub endpoint (--hub-listen), by route and HTTP status code.", labelNames: ["route", "code"], registers: [this.registry] });
  private readonly hubSentBytes = new Counter({ name: "modelcache_hub_sent_bytes_total", help: "Bytes of file content the hub endpoint sent.", registers: [this.registry] });
  private readonly peerTransferred = new Counter({ name: "modelcache_peer_bytes_total", help: "Bytes exchanged with peer servers (--peers): in, fetched from peers and verified; out, sent to peers by the hub endpoint.", labelNames: ["direction"], registers: [this.registry] });
  private readonly peerErrors = new Counter({ name: "modelcache_peer_errors_total", help: "Peer requests that failed and fell through to the next peer or the source, by reason: mismatch (other bytes than the digest), timeout, unreachable, status.", labelNames: ["reason"], registers: [this.registry] });
  private readonly pullSeconds = new Histogram({ name: "modelcache_pull_duration_seconds", help: "How long pull jobs ran, queue wait included.", buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 1800, 7200], registers: [this.registry] });

  constructor(runtime: () => Runtime | undefined, verifyIntervalMs?: number) {
    // the settings alerts compare with: a rule reads the floor, the quota and
    // the interval of the server it watches instead of assuming the defaults
    new Gauge({ name: "modelcache_verify_interval_seconds", help: "The background verification's --verify-interval; 0: it is off.", registers: [this.registry] }).set((verifyIntervalMs ?? 0) / 1000);
    new Gauge({ name: "modelcache_start_time_seconds", help: "When the server process started (Unix seconds).", registers: [this.registry] }).set(Math.round(Date.now() / 1000 - process.uptime()));
    new Gauge({
      name: "modelcache_capacity_bytes",
      help: "The cache's limits: max, --cache-max-bytes (0: none); min_free, --min-free-bytes; and free, the free space on the cache root's filesystem now.",
      labelNames: ["kind"],
      registers: [this.registry],
      async collect() {
        const current = runtime();
        if (!current) return;
        const root = current.layout.root;
        const fs = await statfs(root).catch((err: unknown) => {
          throw filesystemError("read the free space of", root, err);
        });
        this.set({ kind: "max" }, current.capacity.settings.maxBytes);
        this.set({ kind: "min_free" }, current.capacity.settings.minFreeBytes);
        this.set({ kind: "free" }, fs.bavail * fs.bsize);
      },
    });
    new Gauge({
      name: "modelcache_cache_bytes",
      help: "Bytes of each installed model, from its manifest.",
      labelNames: ["model"],
      registers: [this.registry],
      async collect() {
        const current = runtime();
        if (!current) return;
        this.reset();
        for (const model of await current.registry.models.values().all()) {
          if (model.install) this.set({ model: model.name }, model.install.sizeBytes);
        }
      },
    });
    new Gauge({
      name: "modelcache_store_bytes",
      help: "Bytes of the cache: stored (each distinct content once, manifests, partial downloads) and logical (every install's files, as if nothing were shared).",
      labelNames: ["kind"],
      registers: [this.registry],
      async collect() {
        const current = runtime();
        if (!current) return;
        const { storedBytes, logicalBytes } = await cacheBytes(current);
        this.set({ kind: "stored" }, storedBytes);
        this.set({ kind: "logical" }, logicalBytes);
      },
    });
    new Gauge({
      name: "modelcache_pull_jobs",
      help: "Pull jobs by state.",
      labelNames: ["state"],
      registers: [this.registry],
      collect() {
        const current = runtime();
        if (!current) return;
        for (const state of ["running", "queued"] as const) this.set({ state }, current.pulls.count(state));
      },
    });
  }

  started(path: string, type: "unary" | "server_stream"): void {
    this.rpcSeries(path, type).started.inc();
  }

  handled(path: string, type: "unary" | "server_stream", code: string, seconds: number): void {
    const series = this.rpcSeries(path, type);
    let handled = series.handled.get(code);
    if (!handled) series.handled.set(code, (handled = this.rpcHandled.labels({ ...series.labels, grpc_code: code })));
    handled.inc();
    series.seconds.observe(seconds);
  }

  /** Each method's series, looked up once: prom-client hashes a label set on every call otherwise. */
  private rpcSeries(path: string, type: "unary" | "server_stream") {
    const key = `${type} ${path}`;
    let series = this.rpcSeriesByMethod.get(key);
    if (!series) {
      const labels = { grpc_service: serviceOf(path), grpc_method: methodOf(path), grpc_type: type };
      series = { labels, started: this.rpcStarted.labels(labels), handled: new Map(), seconds: this.rpcSeconds.labels(labels) };
      this.rpcSeriesByMethod.set(key, series);
    }
    return series;
  }

  pullEnded(_model: string, { result, bytes, seconds, reusedBytes }: { result: PullResult; bytes: number; seconds: number; reusedBytes: number }): void {
    this.pulls.inc({ result });
    this.reusedBytes.inc(reusedBytes);
    this.pullBytes.inc(bytes);
    this.pullSeconds.observe(seconds);
  }

  verifiedBytes(bytes: number): void {
    this.verifyBytes.inc(bytes);
  }

  corruptFound(): void {
    this.corruptFiles.inc();
  }

  fullPassEnded(atMs: number): void {
    this.lastVerifyPass.set(atMs / 1000);
  }

  repairEnded(_model: string, result: "ok" | "failed"): void {
    this.repairs.inc({ result });
  }

  evicted(_model: string, reason: EvictionReason): void {
    this.evictions.inc({ reason });
  }

  hubRequest(route: string, code: number): void {
    this.hubRequests.inc({ route, code: String(code) });
  }

  hubSent(bytes: number): void {
    this.hubSentBytes.inc(bytes);
  }

  peerBytes(direction: "in" | "out", bytes: number): void {
    this.peerTransferred.inc({ direction }, bytes);
  }

  peerError(reason: PeerErrorReason): void {
    this.peerErrors.inc({ reason });
  }

  modelsFileApplied(atMs: number): void {
    this.lastModelsFileApply.set(atMs / 1000);
    this.modelsFileFailing.set(0);
  }

  modelsFileFailed(): void {
    this.modelsFileErrors.inc();
    this.modelsFileFailing.set(1);
  }

  modelsFileBackToApplied(): void {
    this.modelsFileFailing.set(0);
  }

  /** Serves /metrics on `listen` (host:port); resolves with the bound address. */
  async serve(listen: string): Promise<{ address: string; close: () => Promise<void> }> {
    const server: Server = createServer((req, res) => {
      if (req.url !== "/metrics") {
        res.writeHead(404).end("see /metrics\n");
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { "content-type": this.registry.contentType }).end(text),
        (err: Error) => res.writeHead(500).end(`${err.message}\n`),
      );
    });
    const split = listen.lastIndexOf(":");
    const host = listen.slice(0, split);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(Number(listen.slice(split + 1)), host, resolve);
    });
    const address = `${host}:${(server.address() as AddressInfo).port}`;
    return { address, close: () => new Promise((resolve) => server.close(() => resolve())) };
  }
}
