// What the domain operations share while the server runs: the registry, the
// cache layout, the per-model locks, the pull jobs and the server's settings.
import type { Dispatcher } from "undici";
import type { FileCopier } from "./cache/file-copier.js";
import type { CacheLayout } from "./cache/layout.js";
import type { ModelLocks } from "./cache/model-lock.js";
import type { PullJobs } from "./pull/pull-jobs.js";
import type { PullLimits } from "./pull/pull-limits.js";
import type { ContentStore } from "./store/content-store.js";
import type { Registry } from "./registry/open-registry.js";
import type { FixtureRoots } from "./sources/fixture-roots.js";
import type { Bandwidth } from "./sources/hub/bandwidth.js";
import type { S3Settings } from "./sources/s3/open-s3-source.js";
import type { Leases } from "./consumers/leases.js";
import type { Capacity } from "./capacity/capacity.js";
import type { HfCacheView } from "./hf-cache-view/hf-cache-view.js";
import type { UseRecorder } from "./registry/use-recorder.js";
import type { Peers } from "./peers/peers.js";

export interface Runtime {
  registry: Registry;
  layout: CacheLayout;
  /** one pull or drop per model at a time, across processes sharing the cache root */
  locks: ModelLocks;
  pulls: PullJobs;
  /** copies and hashes files on worker threads */
  copier: FileCopier;
  /** every distinct file's content, once */
  store: ContentStore;
  /** the server's --fixture-dir, used when a pull names none */
  fixtureDir: string | undefined;
  /** where a PullRequest's fixture_dir may point */
  fixtureRoots: FixtureRoots;
  hub: HubSettings;
  /** where s3:// sources are read from; unset: AWS S3 in us-east-1 */
  s3?: S3Settings;
  /** registries (host:port) oci:// sources reach over plain HTTP (--oci-plain-http) */
  ociPlainHttp?: readonly string[];
  /** how hub and S3 requests leave the machine: --proxy, else HTTPS_PROXY / HTTP_PROXY / NO_PROXY */
  network?: { proxy?: string; dispatcher?: Dispatcher };
  /** what one pull may bring in */
  pullLimits: PullLimits;
  /** the --models-file the registry follows, if any */
  modelsFile?: string;
  /** the services using installs hold these; a leased install stays */
  leases: Leases;
  /** --cache-max-bytes and --min-free-bytes, kept by evicting */
  capacity: Capacity;
  /** the Hugging Face cache view (--hf-cache-dir), when kept */
  view?: HfCacheView;
  /** when each model was last used, written behind */
  uses: UseRecorder;
  /** the peer servers pulls ask first (--peers), and what the hub endpoint sends peers */
  peers?: Peers;
}

export interface HubSettings {
  /** --hub-url, MODELCACHE_HUB_URL, HF_ENDPOINT, or https://huggingface.co */
  url: string;
  /** --offline or HF_HUB_OFFLINE=1: no pull may touch the network */
  offline: boolean;
  /** --max-bytes-per-second, shared by every download */
  bandwidth: Bandwidth | undefined;
  /** LFS files at least this large are fetched as parallel byte ranges */
  parallelRangeMinBytes: number;
  /** more connections join a lone such file only while one brings it slower than this */
  parallelRangeBelowBytesPerSecond: number;
  /** downloads are written around the page cache where the filesystem takes it (--no-direct-writes: never) */
  directWrites: boolean;
}
