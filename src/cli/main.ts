// The `modelcache` command line (bin/modelcache.js parses argv with it; the
// reference docs are written from it). `serve` runs the server; the other commands
// are clients of a running one. Every flag --foo-bar can also be given as the
// environment variable MODELCACHE_FOO_BAR (the flag wins).
import { Command, Option } from "commander";
import { quote } from "../errors.js";
import { DEFAULT_PULL_LIMITS } from "../pull/pull-limits.js";
import { ROLES, type Role } from "../auth/access-tokens.js";
import { addClientCommands } from "./client-commands.js";
import type { ServeOptions } from "./serve.js";
import { helpMarkingRequired, hostAndPort, pointUsageErrorsToHelp, wholeNumber } from "./parse-flags.js";
import { duration, size } from "./parse-units.js";
import { holdYoungGenerationWhileStarting } from "../server/young-generation.js";

/**
 * The platform's data dir (~/.local/share/modelcache on Linux), or none for a
 * user without a home directory (HOME unset and no passwd entry, as a
 * container run with an arbitrary uid may be): then serve asks for --data-dir.
 */
const DEFAULT_DATA_DIR = await platformDataDir();

async function platformDataDir(): Promise<string | undefined> {
  try {
    // env-paths asks the system for the home directory as it loads
    return (await import("env-paths")).default("modelcache", { suffix: "" }).data;
  } catch (err) {
    // os.homedir() found none: the one failure that leaves no default rather than stopping every command
    if ((err as { code?: unknown }).code === "ERR_SYSTEM_ERROR") return undefined;
    throw err;
  }
}

function flag(flags: string, description: string, defaultValue?: string): Option {
  const long = flags.split(" ")[0]!.replace(/^--/, "");
  const env = `MODELCACHE_${long.replace(/-/g, "_").toUpperCase()}`;
  if (!flags.includes("<")) {
    // commander turns a switch on whenever its variable exists, even as "false": read it here
    return new Option(flags, `${description} (env: ${env}=1)`).default(switchFromEnv(env));
  }
  const option = new Option(flags, description).env(env);
  return defaultValue === undefined ? option : option.default(defaultValue);
}

/** A switch from the environment: 1/true/yes/on or 0/false/no/off (or unset); anything else is a usage error. */
function switchFromEnv(name: string): boolean {
  const value = process.env[name];
  if (value === undefined || /^(0|false|no|off|)$/i.test(value)) return false;
  if (/^(1|true|yes|on)$/i.test(value)) return true;
  process.stderr.write(`error: ${name} must be 1, true, yes or on, or 0, false, no or off (got ${quote(value)})\n`);
  process.exit(2);
}


export const program = new Command("modelcache")
  .description("A local cache of AI embedding-model artifacts, served over gRPC")
  .configureHelp(helpMarkingRequired)
  // usage errors exit with 2, so scripts can tell them from failed calls (1); subcommands inherit this
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));

// a reader that goes away early (`| head`) ends the output, not the process with a stack trace
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(0);
  throw err;
});

program
  .command("serve")
  .description("run the gRPC server")
  .addOption(flag("--listen <host:port>", "address to listen on", "127.0.0.1:50051").argParser(hostAndPort))
  .addOption(flag("--data-dir <dir>", "where the registry (LevelDB) and the lease journal live", DEFAULT_DATA_DIR))
  .addOption(flag("--cache-dir <dir>", "the cache root (default: <data-dir>/ai_models_cache)"))
  .addOption(flag("--fixture-dir <dir>", "a local directory to pull from when a PullRequest names none"))
  .addOption(
    flag("--fixture-root <dir>", "a directory a PullRequest's fixture_dir may lie in; repeatable (env: several separated by ':')").argParser((value: string, previous: string[] | undefined) => [
      ...(previous ?? []),
      ...value.split(":").filter(Boolean),
    ]),
  )
  .addOption(flag("--max-concurrent-pulls <n>", "pulls running at once; more wait in a queue", "2").argParser(wholeNumber(1)))
  .addOption(flag("--hub-url <url>", "the Hugging Face-compatible hub to pull from (else HF_ENDPOINT, else https://huggingface.co)"))
  .addOption(flag("--s3-endpoint <url>", "an S3-compatible object store for s3:// sources, addressed path-style (else AWS_ENDPOINT_URL, else AWS S3)"))
  .addOption(flag("--s3-region <region>", "the region of s3:// sources (else AWS_REGION, else us-east-1)"))
  .addOption(flag("--oci-plain-http <registries>", "registries (host:port,...) that oci:// sources reach over plain HTTP rather than HTTPS (else MODELCACHE_OCI_PLAIN_HTTP)"))
  .addOption(flag("--proxy <url>", "the proxy hub and S3 requests go through (else HTTPS_PROXY, HTTP_PROXY and NO_PROXY, in either case)"))
  .addOption(flag("--offline", "never touch the network (also HF_HUB_OFFLINE=1)"))
  .addOption(flag("--max-bytes-per-second <size>", "cap on the total download rate from the hub (10MiB, 500KB, ...)").argParser(size(1024)))
  .addOption(flag("--parallel-range-min-bytes <size>", "LFS files at least this large are fetched as parallel byte ranges", "64MiB").argParser(size(1024 * 1024)))
  .addOption(
    flag("--parallel-range-below-bytes-per-second <size>", "idle connections join such a file only once its own brings it slower than this a second (0: never)", "200MB").argParser(size(0)),
  )
  .addOption(
    new Option(
      "--no-direct-writes",
      "write downloads through the page cache, never around it with O_DIRECT: for a cache root on a filesystem that takes O_DIRECT but is slow with it (NFS, some FUSE filesystems) (env: MODELCACHE_NO_DIRECT_WRITES=1)",
    ).default(!switchFromEnv("MODELCACHE_NO_DIRECT_WRITES")),
  )
  .addOption(flag("--metrics-listen <host:port>", "serve Prometheus metrics at http://<host:port>/metrics").argParser(hostAndPort))
  .addOption(flag("--hf-cache-dir <dir>", "keep the Hugging Face hub cache layout of hub installs in <dir> (hard links, on the cache root's filesystem) for HF_HUB_CACHE readers; off unless given"))
  .addOption(flag("--hub-listen <host:port>", "serve the Hugging Face Hub protocol (downloads of installed models) at http(s)://<host:port>, or on unix:PATH; off unless given").argParser(hostAndPort))
  .addOption(flag("--peers <list>", "other servers' hub endpoints pulls fetch content from first, by digest, every byte verified: base URLs and/or dns:NAME:PORT (every A/AAAA record, re-resolved every 30 s), comma-separated"))
  .addOption(flag("--peer-token-file <file>", "the bearer token sent to peers (a consumer's of their --auth-tokens), surrounding whitespace trimmed"))
  .addOption(flag("--peer-max-bytes-per-second <size>", "cap on what the hub endpoint sends to peers, shared by all of them (50MiB, ...); default: no cap").argParser(size(1024)))
  .addOption(flag("--log-level <level>", "fatal, error, warn, info, debug, trace or silent", "info").choices(["fatal", "error", "warn", "info", "debug", "trace", "silent"]))
  .addOption(flag("--log-format <format>", "json lines, pretty lines, or auto: pretty on a terminal, else json", "auto").choices(["auto", "json", "pretty"]))
  .addOption(flag("--auth-tokens <file>", "JSON file of accepted token hashes and roles (see 'modelcache tokens new'), read again on SIGHUP; without it auth is off and only loopback may listen"))
  .addOption(flag("--insecure-no-auth", "allow listening beyond loopback without --auth-tokens or --tls-client-ca"))
  .addOption(flag("--insecure-no-tls", "allow tokens beyond loopback without TLS (a proxy in front terminates it)"))
  .addOption(flag("--tls-cert <file>", "PEM certificate chain: serve over TLS (with --tls-key)"))
  .addOption(flag("--tls-key <file>", "PEM private key of --tls-cert"))
  .addOption(flag("--tls-client-ca <file>", "PEM CA bundle: require client certificates signed by it (mTLS)"))
  .addOption(flag("--vault-key-file <file>", "32-byte key that seals secrets at rest, mode 0600 (default: <data-dir>/vault.key, created on first start)"))
  .addOption(flag("--max-message-bytes <n>", "largest request message accepted", String(4 * 1024 * 1024)).argParser(wholeNumber(1)))
  .addOption(flag("--max-concurrent-streams <n>", "calls one connection may have open at once (advertised to clients, which queue the rest)", "256").argParser(wholeNumber(1)))
  .addOption(flag("--max-files-per-pull <n>", "files one pull may install", String(DEFAULT_PULL_LIMITS.maxFiles)).argParser(wholeNumber(1)))
  .addOption(flag("--max-file-bytes <size>", "largest file a pull may install", "128GiB").argParser(size(1)))
  .addOption(flag("--max-pull-bytes <size>", "most bytes one pull may install", "512GiB").argParser(size(1)))
  .addOption(flag("--models-file <file>", "YAML or JSON list of models the registry follows: applied at start, when it changes, and on SIGHUP"))
  .addOption(flag("--cache-max-bytes <size>", "the cache's quota (500MB, 10GiB, ...); least recently used installs are evicted to stay under it; 0: none", "0").argParser(size(0)))
  .addOption(flag("--min-free-bytes <size>", "the free space a pull must leave on the cache's filesystem, evicting to keep it", "1GiB").argParser(size(0)))
  .addOption(flag("--verify-interval <duration>", "re-hash the stored content in the background this often (30s, 15m, 6h); unset: never").argParser(duration(1, 366 * 86_400)))
  .addOption(flag("--verify-bytes-per-second <size>", "the pace of the background re-hashing", "100MiB").argParser(size(1)))
  .addOption(new Option("--no-auto-repair", "do not pull again, in the background, models whose content was found corrupt (by the verification, a pull, adoption or a deep inspect)"))
  .addOption(flag("--max-lease-seconds <duration>", "the longest lease ResolveModel grants (1h, 1d, 86400); longer requests are shortened to it", "1d").argParser(duration(1, 366 * 86_400)))
  // the server and everything it needs load only for `serve`: client commands and --help stay fast
  .action(async (options: ServeOptions) => {
    // before the server's modules load: they are what would grow it
    holdYoungGenerationWhileStarting();
    return (await import("./serve.js")).serve(options);
  });

program
  .command("tokens")
  .description("access tokens for servers started with --auth-tokens")
  .command("new")
  .description("print a fresh token (give it to the caller) and its entry (add it to the --auth-tokens file); with --file, add the entry there")
  .requiredOption("--name <name>", "who will use it: shown in the audit log")
  .addOption(new Option("--role <role>", "reader: GetModel, ListModels, InspectCache, DescribeCache, ListLeases, reflection; consumer: also ResolveModel, ReleaseLease; admin: everything").choices(ROLES).makeOptionMandatory())
  .option("--file <file>", "add the entry to this --auth-tokens file (created if absent, mode 0600)")
  .action(async (options: { name: string; role: Role; file?: string }) => {
    try {
      const { newToken } = await import("../auth/access-tokens.js");
      const { token, entry } = newToken(options.name, options.role);
      if (options.file) await (await import("../auth/add-token-entry.js")).addTokenEntry(options.file, entry);
      process.stdout.write(`token: ${token}\nentry: ${JSON.stringify(entry)}\n`);
      process.stderr.write(`the token is shown once and not stored anywhere; the server keeps only its sha256${options.file ? `; the entry was added to ${options.file} (send the server SIGHUP, or restart it, to load it)` : ""}\n`);
    } catch (err) {
      process.stderr.write(`error: ${(err as Error).message}\n`);
      process.exitCode = 1;
    }
  });

addClientCommands(program, flag);
pointUsageErrorsToHelp(program);

