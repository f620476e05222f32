// The server's settings: every option checked (and the TLS files read)
// before anything is created or opened, so that a bad option leaves the data
// dir and the cache root as they were, with a message naming the flag.
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { ServerCredentials } from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { AccessTokens } from "../auth/access-tokens.js";
import { type CapacitySettings, DEFAULT_MIN_FREE_BYTES } from "../capacity/capacity.js";
import { DEFAULT_MAX_LEASE_SECONDS } from "../consumers/leases.js";
import { ModelCacheError, quote } from "../errors.js";
import { DEFAULT_VERIFY_BYTES_PER_SECOND, type VerificationSettings } from "../maintenance/background-verification.js";
import { DEFAULT_PARALLEL_RANGE_BELOW_BYTES_PER_SECOND } from "../sources/hub/connections.js";
import { DEFAULT_PULL_LIMITS, type PullLimits } from "../pull/pull-limits.js";
import { checkVaultKeyFile } from "../registry/vault-key.js";
import type { Runtime } from "../runtime.js";
import { FixtureRoots } from "../sources/fixture-roots.js";
import { checkProxyUrl } from "../sources/proxy-url.js";
import { LISTEN_ADDRESS_FORM, isHostAndPort } from "./listen-address.js";
import { type PeerEntry, parsePeerList } from "../peers/parse-peer-list.js";
import { PEER_HEAD_BUDGET_MS, PEER_STALL_MS } from "../peers/peers.js";
import { type TlsFiles, checkExposure, hostOf, isLoopback, serverCredentials } from "./transport-security.js";

export interface ServerOptions {
  /** host:port; port 0 picks a free one */
  listen: string;
  dataDir: string;
  /** default <dataDir>/ai_models_cache */
  cacheDir?: string;
  fixtureDir?: string;
  /** directories a PullRequest's fixture_dir may lie in (the fixtureDir is one implicitly) */
  fixtureRoots?: string[];
  /** default 100 ms, about ten file_progress events a second */
  progressIntervalMs?: number;
  /** pulls running at once; more wait in a queue (default 2) */
  maxConcurrentPulls?: number;
  /** files of one pull copied at once (default 4) */
  fileConcurrency?: number;
  /** the hub to pull from when no fixture dir applies (default https://huggingface.co) */
  hubUrl?: string;
  /** the S3-compatible store s3:// sources are read from (default AWS S3) */
  s3Endpoint?: string;
  /** the region of s3:// sources (default us-east-1) */
  s3Region?: string;
  /** registries (host:port) oci:// sources reach over plain HTTP rather than HTTPS */
  ociPlainHttp?: string[];
  /** the proxy hub and S3 requests go through, overriding HTTPS_PROXY / HTTP_PROXY / NO_PROXY */
  proxy?: string;
  /** refuse every pull that needs the network */
  offline?: boolean;
  /** cap on the total download rate from the hub */
  maxBytesPerSecond?: number;
  /** LFS files at least this large are fetched as parallel byte ranges (default 64 MiB) */
  parallelRangeMinBytes?: number;
  /** more connections join a lone such file only while one brings it slower than this (default 200 MB/s; 0: never) */
  parallelRangeBelowBytesPerSecond?: number;
  /** false (--no-direct-writes): every download is written through the page cache (default true) */
  directWrites?: boolean;
  /** host:port to serve Prometheus metrics on, at /metrics */
  metricsListen?: string;
  /** host:port or unix:PATH to serve the Hugging Face Hub protocol on (the hub endpoint); unset: off */
  hubListen?: string;
  /** --hf-cache-dir: keep the Hugging Face cache view there */
  hfCacheDir?: string;
  logger?: Logger;
  /** how long shutdown waits for calls before cutting them; default 10 s */
  shutdownGraceMs?: number;
  /** the tokens callers must present; without them, auth is off (loopback only) */
  authTokens?: AccessTokens;
  /** lets a server without auth listen beyond loopback */
  insecureNoAuth?: boolean;
  /** lets tokens be accepted beyond loopback without TLS (a proxy terminates it) */
  insecureNoTls?: boolean;
  tls?: TlsFiles;
  /** the vault key (32 bytes, mode 0600); default <dataDir>/vault.key */
  vaultKeyFile?: string;
  /** largest request message accepted (default 4 MiB) */
  maxMessageBytes?: number;
  /** calls one connection may have open at once, advertised to HTTP/2 so clients queue the rest (default 256) */
  maxConcurrentStreams?: number;
  /** what one pull may bring in */
  pullLimits?: Partial<PullLimits>;
  /** a YAML or JSON list of models the registry follows */
  modelsFile?: string;
  /** quiet time after a change to the models file before it is applied (default 500 ms) */
  modelsFileDebounceMs?: number;
  /** first delay before a failed background pull of a listed model is tried again (default 1 s) */
  modelsFileRetryMs?: number;
  /** the cache's quota in bytes; 0 (default): none */
  cacheMaxBytes?: number;
  /** the free space a pull must leave on the cache root's filesystem (default 1 GiB) */
  minFreeBytes?: number;
  /** re-hash the stored content this often (after each pass ends); unset: never */
  verifyIntervalMs?: number;
  /** the pace of that re-hashing (default 100 MiB/s) */
  verifyBytesPerSecond?: number;
  /** pull again in the background a model whose content was found corrupt, by any check (default on) */
  autoRepair?: boolean;
  /** the longest lease ResolveModel grants (default a day) */
  maxLeaseSeconds?: number;
  /** --peers: other servers' hub endpoints (base URLs, dns:NAME:PORT) pulls ask first */
  peers?: string | string[];
  /** --peer-token-file: the bearer token sent to peers */
  peerTokenFile?: string;
  /** --peer-max-bytes-per-second: cap on what the hub endpoint sends to peers; unset: none */
  peerMaxBytesPerSecond?: number;
  /** a peer transfer with no progress for this long is a peer error (default 5 s; tests shorten it) */
  peerStallMs?: number;
  /** the most a peer's HEAD may take (default 200 ms; tests on a loaded machine lengthen it where a peer must answer) */
  peerHeadBudgetMs?: number;
}

/**
 * Calls one connection may have open at once unless --max-concurrent-streams
 * says otherwise. Clients queue what is past it (HTTP/2 tells them the limit),
 * so it bounds the work one connection can put on the server, not what a
 * client may ask for. 256 is above what common servers choose (nginx 128,
 * Go's net/http2 250) so that a client tuned for them is never held back.
 */
const DEFAULT_MAX_CONCURRENT_STREAMS = 256;
/** HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS is a 32-bit value */
const MAX_HTTP2_STREAMS = 2 ** 32 - 1;

/** Everything start needs, checked before anything opens. */
export interface Settings {
  credentials: ServerCredentials;
  authenticated: boolean;
  fixtureRoots: FixtureRoots;
  dataDir: string;
  cacheRoot: string;
  hfCacheDir: string | undefined;
  fixtureDir: string | undefined;
  maxConcurrentPulls: number;
  progressIntervalMs: number;
  fileConcurrency: number;
  hub: Omit<Runtime["hub"], "bandwidth"> & { maxBytesPerSecond: number | undefined };
  s3: NonNullable<Runtime["s3"]>;
  ociPlainHttp: string[];
  proxy: string | undefined;
  pullLimits: PullLimits;
  maxStreams: number;
  maxMessageBytes: number;
  shutdownGraceMs: number;
  modelsFile: string | undefined;
  maxLeaseSeconds: number;
  capacity: CapacitySettings;
  verification: VerificationSettings | undefined;
  /** --auto-repair: models holding condemned content are pulled again, whoever found it */
  autoRepair: boolean;
  peers: PeerSettings;
}

export interface PeerSettings {
  entries: PeerEntry[];
  token: string | undefined;
  maxBytesPerSecond: number | undefined;
  stallMs: number;
  headBudgetMs: number;
}

/**
 * Checks every option (and reads the TLS files) without creating or opening
 * anything, so that a bad option leaves the data dir and the cache root as
 * they were.
 */
export async function resolveSettings(options: ServerOptions): Promise<Settings> {
  // grpc-js also listens on unix:PATH
  if (!options.listen.startsWith("unix:")) checkAddress("--listen", options.listen);
  if (options.metricsListen !== undefined) checkAddress("--metrics-listen", options.metricsListen);
  if (options.hubListen !== undefined) checkHubListen(options);
  checkExposure({
    listen: options.listen,
    tokens: options.authTokens !== undefined,
    tls: options.tls,
    insecureNoAuth: options.insecureNoAuth ?? false,
    insecureNoTls: options.insecureNoTls ?? false,
  });
  const maxLeaseSeconds = options.maxLeaseSeconds ?? DEFAULT_MAX_LEASE_SECONDS;
  // a year at most: a longer lease is an install nobody can ever evict or drop
  if (!Number.isInteger(maxLeaseSeconds) || maxLeaseSeconds < 1 || maxLeaseSeconds > 366 * 86_400) {
    throw new ModelCacheError("invalid_argument", `--max-lease-seconds must be a whole number from 1 to ${366 * 86_400} (a year) (got ${maxLeaseSeconds})`);
  }
  const capacity = { maxBytes: options.cacheMaxBytes ?? 0, minFreeBytes: options.minFreeBytes ?? DEFAULT_MIN_FREE_BYTES };
  for (const [flag, value] of [["--cache-max-bytes", capacity.maxBytes], ["--min-free-bytes", capacity.minFreeBytes]] as const) {
    if (!Number.isSafeInteger(value) || value < 0) throw new ModelCacheError("invalid_argument", `${flag} must be a whole number of bytes, 0 or more (got ${value})`);
  }
  const verification =
    options.verifyIntervalMs === undefined ? undefined : { intervalMs: options.verifyIntervalMs, bytesPerSecond: options.verifyBytesPerSecond ?? DEFAULT_VERIFY_BYTES_PER_SECOND };
  if (verification && (!Number.isSafeInteger(verification.intervalMs) || verification.intervalMs < 1)) {
    throw new ModelCacheError("invalid_argument", `--verify-interval must be a positive duration such as 30s, 15m or 6h (got ${verification.intervalMs} ms)`);
  }
  if (verification && (!Number.isSafeInteger(verification.bytesPerSecond) || verification.bytesPerSecond < 1)) {
    throw new ModelCacheError("invalid_argument", `--verify-bytes-per-second must be a size of at least 1 byte, such as 100MiB (got ${verification.bytesPerSecond})`);
  }
  const maxConcurrentPulls = options.maxConcurrentPulls ?? 2;
  if (!Number.isInteger(maxConcurrentPulls) || maxConcurrentPulls < 1) {
    throw new ModelCacheError("invalid_argument", `--max-concurrent-pulls must be a whole number of at least 1 (got ${maxConcurrentPulls})`);
  }
  const hub = {
    url: checkHubUrl(options.hubUrl ?? "https://huggingface.co"),
    offline: options.offline ?? false,
    maxBytesPerSecond: options.maxBytesPerSecond ? checkRate(options.maxBytesPerSecond) : undefined,
    parallelRangeMinBytes: checkRangeMinimum(options.parallelRangeMinBytes ?? 64 * 1024 * 1024),
    // Infinity (from code, not a flag): idle connections join at once, whatever the rate
    parallelRangeBelowBytesPerSecond:
      options.parallelRangeBelowBytesPerSecond === Infinity
        ? Infinity
        : checkLimit("--parallel-range-below-bytes-per-second", options.parallelRangeBelowBytesPerSecond ?? DEFAULT_PARALLEL_RANGE_BELOW_BYTES_PER_SECOND, Number.MAX_SAFE_INTEGER, 0),
    directWrites: options.directWrites ?? true,
  };
  const s3 = {
    endpoint: options.s3Endpoint !== undefined ? checkHttpUrl("--s3-endpoint", options.s3Endpoint, "http://127.0.0.1:9000") : undefined,
    region: checkRegion(options.s3Region ?? "us-east-1"),
  };
  const pullLimits = {
    maxFiles: checkLimit("--max-files-per-pull", options.pullLimits?.maxFiles ?? DEFAULT_PULL_LIMITS.maxFiles),
    maxFileBytes: checkLimit("--max-file-bytes", options.pullLimits?.maxFileBytes ?? DEFAULT_PULL_LIMITS.maxFileBytes),
    maxTotalBytes: checkLimit("--max-pull-bytes", options.pullLimits?.maxTotalBytes ?? DEFAULT_PULL_LIMITS.maxTotalBytes),
  };
  const maxStreams = checkLimit("--max-concurrent-streams", options.maxConcurrentStreams ?? DEFAULT_MAX_CONCURRENT_STREAMS, MAX_HTTP2_STREAMS);
  const maxMessageBytes = checkLimit("--max-message-bytes", options.maxMessageBytes ?? 4 * 1024 * 1024);
  const progressIntervalMs = checkLimit("the progress interval (ms)", options.progressIntervalMs ?? 100, Number.MAX_SAFE_INTEGER, 0);
  const fileConcurrency = checkLimit("--file-concurrency", options.fileConcurrency ?? 4);
  const shutdownGraceMs = checkLimit("the shutdown grace", options.shutdownGraceMs ?? 10_000);
  // the TLS files are read before anything else opens, so a bad one fails fast
  const credentials = await serverCredentials(options.tls);
  // a key file that exists must already be usable; a missing one is made once the registry is open
  if (options.vaultKeyFile !== undefined) await checkVaultKeyFile(options.vaultKeyFile);
  // callers prove who they are with a token or a client certificate
  const authenticated = options.authTokens !== undefined || options.tls?.clientCa !== undefined;
  const fixtureRoots = await FixtureRoots.resolve(options.fixtureRoots ?? [], options.fixtureDir, {
    openWithoutRoots: !authenticated && isLoopback(hostOf(options.listen)),
  });
  const dataDir = resolve(options.dataDir);
  const peers = await peerSettings(options);
  return {
    peers,
    credentials,
    authenticated,
    fixtureRoots,
    dataDir,
    cacheRoot: resolve(options.cacheDir ?? join(dataDir, "ai_models_cache")),
    fixtureDir: options.fixtureDir ? resolve(options.fixtureDir) : undefined,
    hfCacheDir: options.hfCacheDir ? resolve(options.hfCacheDir) : undefined,
    maxConcurrentPulls,
    maxLeaseSeconds,
    capacity,
    verification,
    autoRepair: options.autoRepair ?? true,
    progressIntervalMs,
    fileConcurrency,
    hub,
    s3,
    ociPlainHttp: (options.ociPlainHttp ?? []).map(checkRegistryAddress),
    proxy: options.proxy !== undefined ? checkProxyUrl(options.proxy) : undefined,
    pullLimits,
    maxStreams,
    maxMessageBytes,
    shutdownGraceMs,
    modelsFile: options.modelsFile !== undefined ? resolve(options.modelsFile) : undefined,
  };
}

/** host:port with a port from 0 to 65535. */
function checkAddress(flag: string, address: string): void {
  if (!isHostAndPort(address)) throw new ModelCacheError("invalid_argument", `${flag} ${quote(address)} is malformed: give ${LISTEN_ADDRESS_FORM}`);
}

/** --hub-listen: host:port (held to the same exposure rules as --listen) or unix:PATH (node-local). */
function checkHubListen(options: ServerOptions): void {
  const listen = options.hubListen!;
  if (listen.startsWith("unix:")) {
    if (listen.length === "unix:".length) throw new ModelCacheError("invalid_argument", "--hub-listen unix: needs a socket path, such as unix:/run/modelcache/hub.sock");
    return;
  }
  checkAddress("--hub-listen", listen);
  const exposure = { tokens: options.authTokens !== undefined, tls: options.tls, insecureNoAuth: options.insecureNoAuth ?? false, insecureNoTls: options.insecureNoTls ?? false };
  try {
    checkExposure({ listen, ...exposure });
  } catch (err) {
    throw new ModelCacheError((err as ModelCacheError).kind, (err as Error).message.replace("--listen", "--hub-listen"));
  }
}

function checkHubUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ModelCacheError("invalid_argument", `--hub-url '${url.slice(0, 80)}' is not a URL; give one such as https://huggingface.co`);
  }
  if (parsed.protocol !== "https:" && parsed.protocol !== "http:") {
    throw new ModelCacheError("invalid_argument", `--hub-url must be an http(s) URL (got ${parsed.protocol})`);
  }
  return parsed.href;
}

function checkRate(bytesPerSecond: number): number {
  if (!Number.isFinite(bytesPerSecond) || bytesPerSecond < 1024) {
    throw new ModelCacheError("invalid_argument", `--max-bytes-per-second must be a number of at least 1024 (got ${bytesPerSecond})`);
  }
  return bytesPerSecond;
}

function checkLimit(flag: string, value: number, most = Number.MAX_SAFE_INTEGER, least = 1): number {
  if (!Number.isSafeInteger(value) || value < least || value > most) {
    throw new ModelCacheError("invalid_argument", `${flag} must be a whole number from ${least} to ${most} (got ${value})`);
  }
  return value;
}

function checkRangeMinimum(bytes: number): number {
  if (!Number.isSafeInteger(bytes) || bytes < 1024 * 1024) {
    throw new ModelCacheError("invalid_argument", `--parallel-range-min-bytes must be a whole number of at least 1048576 (got ${bytes})`);
  }
  return bytes;
}

function checkHttpUrl(flag: string, url: string, example: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ModelCacheError("invalid_argument", `${flag} '${url.slice(0, 80)}' is not a URL; give one such as ${example}`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new ModelCacheError("invalid_argument", `${flag} must be an http(s) URL such as ${example} (got ${parsed.protocol})`);
  }
  return url;
}

function checkRegion(region: string): string {
  if (!/^[a-z0-9-]{1,64}$/.test(region)) {
    throw new ModelCacheError("invalid_argument", `--s3-region '${region.slice(0, 80)}' is not a region name such as us-east-1`);
  }
  return region;
}

/** A --oci-plain-http entry: host:port, as an oci:// source names its registry. */
function checkRegistryAddress(value: string): string {
  if (/^[A-Za-z0-9.-]+:[0-9]{1,5}$/.test(value)) return value;
  throw new ModelCacheError("invalid_argument", `--oci-plain-http entry '${value.slice(0, 80)}' is not a registry's host:port such as 127.0.0.1:5000`);
}

/** --peers, --peer-token-file (read now, its content trimmed) and --peer-max-bytes-per-second. */
async function peerSettings(options: ServerOptions): Promise<PeerSettings> {
  const entries = options.peers === undefined ? [] : parsePeerList(options.peers);
  let token: string | undefined;
  if (options.peerTokenFile !== undefined) {
    try {
      token = (await readFile(options.peerTokenFile, "utf8")).trim();
    } catch (err) {
      throw new ModelCacheError("invalid_argument", `--peer-token-file ${quote(options.peerTokenFile)} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): give a file holding the token of a consumer of the peers' hub endpoints`);
    }
    if (token === "" || /\s/.test(token)) throw new ModelCacheError("invalid_argument", `--peer-token-file ${quote(options.peerTokenFile)} must hold one token (no spaces inside), such as one 'modelcache tokens new --role consumer' printed`);
  }
  const rate = options.peerMaxBytesPerSecond;
  if (rate !== undefined && (!Number.isSafeInteger(rate) || rate < 1024)) {
    throw new ModelCacheError("invalid_argument", `--peer-max-bytes-per-second must be a size of at least 1024 bytes per second, such as 50MiB (got ${rate})`);
  }
  const stallMs = checkLimit("the peer stall limit (ms)", options.peerStallMs ?? PEER_STALL_MS);
  const headBudgetMs = checkLimit("the peer HEAD budget (ms)", options.peerHeadBudgetMs ?? PEER_HEAD_BUDGET_MS);
  return { entries, token, maxBytesPerSecond: rate, stallMs, headBudgetMs };
}
