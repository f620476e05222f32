// Opens what the domain operations share, in order: the registry, the cache
// root (unfinished unregistrations, drops and swaps finished; the registry
// corrected from the disk), the content store with its ingest area, leases,
// capacity, the pull jobs, and the models file applied. Every step that
// opens something adds its closer, so a start that fails later unwinds it.
import { mkdir } from "node:fs/promises";
import type { Logger } from "pino";
import { CacheLayout } from "../cache/layout.js";
import { FileCopier } from "../cache/file-copier.js";
import { ModelLocks } from "../cache/model-lock.js";
import { recoverCacheRoot } from "../cache/recover-cache-root.js";
import { Capacity } from "../capacity/capacity.js";
import { warnBelowFreeFloor } from "../capacity/warn-below-free-floor.js";
import { LeaseJournal } from "../consumers/lease-journal.js";
import { type Lease, Leases, SWEEP_INTERVAL_MS } from "../consumers/leases.js";
import { markCondemned } from "../lifecycle/mark-condemned.js";
import { reconcileRegistry } from "../lifecycle/reconcile-registry.js";
import { finishUnregistrations } from "../lifecycle/unregister-model.js";
import { earlierInstalls } from "../maintenance/adopt-installs.js";
import { markQuarantined } from "../maintenance/mark-quarantined.js";
import { Repairs } from "../maintenance/repairs.js";
import { ModelsFileFollower } from "../models-file/watch-models-file.js";
import { PullJobs } from "../pull/pull-jobs.js";
import { PullQueue } from "../pull/pull-queue.js";
import { repairModel } from "../pull/repair-model.js";
import { openRegistry } from "../registry/open-registry.js";
import { UseRecorder } from "../registry/use-recorder.js";
import type { Runtime } from "../runtime.js";
import { Bandwidth } from "../sources/hub/bandwidth.js";
import { ContentStore, type KnownContent } from "../store/content-store.js";
import { clearIngest } from "../store/ingest-areas.js";
import { openView } from "../hf-cache-view/open-view.js";
import type { Metrics } from "./metrics.js";
import { PullLog } from "./pull-log.js";
import { PeerList } from "../peers/peer-list.js";
import { PeerUploads } from "../peers/peer-uploads.js";
import type { ServerOptions, Settings } from "./server-settings.js";

/** Something start opened, closed in reverse order when a later step fails. */
export interface Closer {
  what: string;
  close: () => Promise<void> | void;
}

export interface OpenedRuntime {
  runtime: Runtime;
  /** served at --metrics-listen, when given */
  metrics: Metrics | undefined;
  modelsFile: ModelsFileFollower | undefined;
  /** installs of an earlier version, adopted once the server listens */
  earlier: string[];
  /** pulls the models a condemnation marks again, with --auto-repair */
  repairs: Repairs;
  /** marks the installs that hold quarantined content, whoever quarantined it; the verification runs it before each pass */
  noticeQuarantine: () => Promise<void>;
}

export async function openRuntime(settings: Settings, options: ServerOptions, logger: Logger, closers: Closer[]): Promise<OpenedRuntime> {
  const { dataDir } = settings;
  await mkdir(dataDir, { recursive: true });
  const registry = await openRegistry(dataDir, { vaultKeyFile: options.vaultKeyFile });
  closers.push({ what: "the registry", close: () => registry.close() });
  const layout = new CacheLayout(settings.cacheRoot);
  const locks = new ModelLocks(layout, { log: logger });
  await locks.renewReserve();
  const unregistered = await finishUnregistrations({ registry, layout, locks });
  if (unregistered.length > 0) logger.warn({ unregistered }, "finished unregistering models a crash interrupted");
  const registered = new Set(await registry.models.keys().all());
  const recovery = await recoverCacheRoot(layout, locks, registered);
  if (recovery.stagingRemoved + recovery.purgeRemoved + recovery.restored.length + recovery.skipped.length > 0) {
    logger.warn({ ...recovery }, "cleaned up after an unfinished run");
  }
  const reconciliation = await reconcileRegistry({ registry, layout }, AbortSignal.timeout(60_000));
  if (reconciliation.missing.length + reconciliation.unhealthy.length + reconciliation.recovered.length > 0) {
    logger.warn({ ...reconciliation }, "the registry did not match the cache: corrected from the disk");
  }
  const copier = new FileCopier();
  closers.push({ what: "the file copier", close: () => copier.close() });
  // servers sharing the cache root each write under their own ingest area (its lock never a model's: no dot in those); a dead one's is cleared
  const store = await new ContentStore(layout.root, registry.sublevel<KnownContent>("blobs"), registry.sublevel<string>("blob-ids"), (id) => locks.tryHold(`.ingest-${id}`)).open();
  closers.push({ what: "the content store's ingest area", close: () => store.close() });
  await clearIngest(store);
  const view = settings.hfCacheDir ? await openView(settings.hfCacheDir, layout, registry) : undefined;
  if (view) closers.push({ what: "the Hugging Face cache view", close: () => view.close() });
  await warnBelowFreeFloor(layout.root, settings.capacity.minFreeBytes, logger);
  // prom-client is loaded only when metrics are served
  const metrics = options.metricsListen ? new (await import("./metrics.js")).Metrics(() => running, settings.verification?.intervalMs) : undefined;
  // every detector of corrupt content (a pull, adoption, the background verification, a deep InspectCache) ends here
  let running: Runtime | undefined;
  store.onCondemned(async (condemned) => {
    const marked = await markCondemned({ registry, layout, pulls: running?.pulls }, condemned);
    metrics?.corruptFound();
    logger.error(
      { sha256: condemned.sha256, quarantined: condemned.quarantined, models: marked.unhealthy },
      "stored content no longer matches its sha256: quarantined; the models using it are UNHEALTHY until pulled again",
    );
    for (const name of new Set([...marked.unhealthy.map((m) => m.name), ...marked.pulling])) repairs.repair(name);
  });
  // only found here (a stat per file); adopted once the server listens
  const earlier = await earlierInstalls({ registry, layout });
  const capacity = new Capacity(settings.capacity, () => runtime, logger, metrics ? [metrics] : []);
  const journal = new LeaseJournal(dataDir, {
    rewritten: (outcome) =>
      "failed" in outcome
        ? logger.warn({ err: outcome.failed }, "could not rewrite the lease journal without its ended leases; it goes on growing until a rewrite succeeds")
        : logger.debug({ bytes: outcome.bytes }, "rewrote the lease journal without its ended leases"),
  });
  const leases = new Leases(journal, settings.maxLeaseSeconds);
  closers.push({ what: "the lease journal", close: () => leases.close() });
  // leases end with their model: those of a model whose unregistration a crash interrupted go
  const loadedLeases = await leases.load(async (name) => {
    const record = await registry.models.get(name);
    return record !== undefined && !record.unregistering;
  }, registry.sublevel<Lease>("leases"));
  if (loadedLeases.skipped > 0) logger.warn({ skipped: loadedLeases.skipped, journal: journal.path }, "skipped lease journal lines a crash or a full disk left unfinished");
  if (loadedLeases.moved > 0) logger.info({ moved: loadedLeases.moved, journal: journal.path }, "moved the leases an earlier version kept in the registry into the lease journal");
  leases.startSweeping(SWEEP_INTERVAL_MS, (count) => (count > 0 ? logger.debug({ count }, "forgot expired leases") : undefined));
  const peerList = settings.peers.entries.length > 0 ? new PeerList(settings.peers.entries, logger) : undefined;
  if (peerList) {
    // a fixed --hub-listen port is known now, before a pull of the models file may ask the peers
    peerList.setOwnEndpoint(options.hubListen);
    peerList.start();
    closers.push({ what: "the resolution of --peers names", close: () => peerList.close() });
  }
  const runtime: Runtime = {
    registry,
    layout,
    locks,
    pulls: new PullJobs({
      registry,
      layout,
      locks,
      queue: new PullQueue(settings.maxConcurrentPulls),
      progressIntervalMs: settings.progressIntervalMs,
      fileConcurrency: settings.fileConcurrency,
      copier,
      store,
      view,
      recorders: [...(metrics ? [metrics] : []), new PullLog(logger)],
      capacity,
    }),
    copier,
    store,
    fixtureDir: settings.fixtureDir,
    fixtureRoots: settings.fixtureRoots,
    hub: {
      url: settings.hub.url,
      offline: settings.hub.offline,
      bandwidth: settings.hub.maxBytesPerSecond ? new Bandwidth(settings.hub.maxBytesPerSecond) : undefined,
      parallelRangeMinBytes: settings.hub.parallelRangeMinBytes,
      parallelRangeBelowBytesPerSecond: settings.hub.parallelRangeBelowBytesPerSecond,
      directWrites: settings.hub.directWrites,
    },
    s3: settings.s3,
    ociPlainHttp: settings.ociPlainHttp,
    network: { proxy: settings.proxy },
    pullLimits: settings.pullLimits,
    modelsFile: settings.modelsFile,
    leases,
    capacity,
    view,
    uses: new UseRecorder(registry),
    peers: {
      list: peerList,
      token: settings.peers.token,
      uploads: new PeerUploads(settings.peers.maxBytesPerSecond, () => metrics),
      logger,
      recorder: metrics,
      stallMs: settings.peers.stallMs,
      headBudgetMs: settings.peers.headBudgetMs,
    },
  };
  running = runtime;
  const repairs = new Repairs(runtime.pulls, (name, signal) => repairModel(runtime, name, logger, signal), logger, settings.autoRepair, metrics ? [metrics] : []);
  closers.push({ what: "the repairs under way", close: () => repairs.close() });
  // what a server sharing the cache root condemned (or this one, before a crash could mark it) is marked here too
  const noticeQuarantine = async () => {
    const marked = await markQuarantined(runtime);
    if (marked.unhealthy.length > 0) logger.error({ models: marked.unhealthy }, "installs hold content found corrupt (quarantined): UNHEALTHY until pulled again");
    for (const name of new Set([...marked.unhealthy.map((m) => m.name), ...marked.pulling])) repairs.repair(name);
  };
  await noticeQuarantine();
  const modelsFile = settings.modelsFile
    ? new ModelsFileFollower(runtime, {
        path: settings.modelsFile,
        logger,
        recorders: metrics ? [metrics] : [],
        debounceMs: options.modelsFileDebounceMs,
        retryMs: options.modelsFileRetryMs,
      })
    : undefined;
  if (modelsFile) {
    closers.push({ what: "the models file's watcher", close: () => modelsFile.close() });
    // before the server listens: callers never see the registry before the file is applied
    await modelsFile.start();
  }
  // a quota lowered since the last run holds from the start, once the models file's pins are in the registry
  await capacity.enforce(AbortSignal.timeout(3_600_000));
  return { runtime, metrics, modelsFile, earlier, repairs, noticeQuarantine };
}
