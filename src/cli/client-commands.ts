// The client commands: they talk to a running server through the same
// public gRPC API as every other service. Human-readable by default;
// --json prints proto3-JSON objects, one per line, and nothing else.
// Only the commands and their flags are defined here; what a command does is
// in client-actions.ts, imported when the command runs.
import { type Command, Option } from "commander";
import { wholeNumber } from "./parse-flags.js";
import type { Global, PullPolicyWord, RegisterOptions, UpdateOptions } from "./client-actions.js";
import { duration } from "./parse-units.js";

const actions = () => import("./client-actions.js");
const dimensions = (value: string) => Number(wholeNumber(1, 2 ** 32 - 1)(value));

export function addClientCommands(program: Command, option: (flags: string, description: string, defaultValue?: string) => Option): void {
  const global = () => program.opts() as Global;
  program.addOption(option("--address <host:port>", "the server to talk to", "127.0.0.1:50051"));
  program.addOption(option("--token <token>", "access token for a server with --auth-tokens (prefer the env var: argv is visible to other users)"));
  program.addOption(option("--tls", "connect over TLS, trusting the system's CAs"));
  program.addOption(option("--tls-ca <file>", "connect over TLS, trusting this PEM CA bundle"));
  program.addOption(option("--tls-client-cert <file>", "PEM client certificate, for a server with --tls-client-ca"));
  program.addOption(option("--tls-client-key <file>", "PEM private key of --tls-client-cert"));
  program.addOption(option("--connect-timeout <ms>", "give up when the server has not answered the connection by then", "1000").argParser(wholeNumber(1)));

  const models = program.command("models").description("register, list, show (get), update and remove models");
  models
    .command("list")
    .description("every registered model")
    .option("--json", "one proto3-JSON Model per line")
    .action(async (opts: { json?: boolean }) => (await actions()).listModels(global(), opts));
  models
    .command("get <name>")
    .alias("show")
    .description("one model")
    .option("--json", "the proto3-JSON Model")
    .action(async (name: string, opts: { json?: boolean }) => (await actions()).getModel(global(), name, opts));
  models
    .command("register <name>")
    .description("add a model to the registry")
    .requiredOption("--source <repo>", "hub repo id, e.g. sentence-transformers/all-MiniLM-L6-v2, s3://bucket/prefix/ or oci://registry/repository")
    .requiredOption("--dimensions <n>", "embedding width", dimensions)
    .option("--revision <rev>", "commit, tag or branch (default: main; s3: none; oci: a tag or sha256: digest, default latest)")
    .option("--credential-alias <alias>", "vault alias of the hub token")
    .addOption(new Option("--pull-policy <policy>", "when the services that use the model may pull it").choices(["never", "if-missing", "always"]))
    .option("--include <glob...>", "only files matching these globs")
    .option("--exclude <glob...>", "never files matching these globs")
    .option("--pin", "never evict the model's install to make room")
    .option("--json", "the proto3-JSON Model")
    .action(async (name: string, opts: RegisterOptions) => (await actions()).registerModel(global(), name, opts));
  models
    .command("update <name>")
    .description("change the fields given and keep the rest of the model's spec; says when the install no longer matches it (pull again to apply)")
    .option("--source <repo>", "hub repo id, s3://bucket/prefix/ or oci://registry/repository")
    .option("--dimensions <n>", "embedding width", dimensions)
    .option("--revision <rev>", "commit sha, tag or branch")
    .option("--credential-alias <alias>", "vault alias of the hub token ('' for none)")
    .addOption(new Option("--pull-policy <policy>", "when the services that use the model may pull it").choices(["never", "if-missing", "always"]))
    .option("--include <glob...>", "only files matching these globs (replaces the model's list)")
    .option("--no-include", "clear the model's include list: every file passes")
    .option("--exclude <glob...>", "never files matching these globs (replaces the model's list)")
    .option("--no-exclude", "clear the model's exclude list")
    .option("--pin", "never evict the model's install to make room")
    .option("--no-pin", "let the model's install be evicted again")
    .option("--json", "the proto3-JSON Model")
    .action(async (name: string, opts: UpdateOptions) => (await actions()).updateModel(global(), name, opts));
  models
    .command("rm <name>")
    .description("unregister a model")
    .option("--drop-cache", "also remove its installed artifacts")
    .action(async (name: string, opts: { dropCache?: boolean }) => (await actions()).unregisterModel(global(), name, opts));

  program
    .command("pull <name>")
    .description("install a model's artifacts, showing each file as it lands")
    .option("--fixture-dir <dir>", "install from this local directory")
    .option("--force", "re-read and re-hash every file")
    .option("--detach", "start the pull (or join the running one), return once the server has it queued or started, and let it run to its end on the server")
    .option("--json", "every event as one proto3-JSON line")
    .action(async (name: string, opts: { fixtureDir?: string; force?: boolean; detach?: boolean; json?: boolean }) => (await actions()).pull(global(), name, opts));

  program
    .command("inspect <name>")
    .description("what is on disk for a model (exit 4 unhealthy, 5 missing)")
    .option("--deep", "re-hash every file")
    .option("--json", "the proto3-JSON InspectCacheResponse")
    .action(async (name: string, opts: { deep?: boolean; json?: boolean }) => (await actions()).inspect(global(), name, opts));

  program
    .command("drop <name>")
    .description("remove a model's artifacts, keep its registration")
    .option("--force", "drop it even while services hold leases on it (the leases end)")
    .action(async (name: string, opts: { force?: boolean }) => (await actions()).drop(global(), name, opts));

  program
    .command("resolve <name>")
    .description("print the path of a healthy install, pulling it first when the policy says so; with --lease, also the lease id (exit 6 when the cache has no room)")
    .addOption(new Option("--policy <policy>", "never: only an install already there; if-missing: pull when missing; always: pull unless the source's revision is installed (default: the model's)").choices(["never", "if-missing", "always"]))
    .option("--lease <duration>", "keep the install from eviction and DropCache for this long (30s, 15m, 1h, 1d; at most the server's --max-lease-seconds: a shorter grant is reported as capped)", duration(1, 2 ** 32 - 1))
    .option("--json", "the proto3-JSON ResolveModelResponse")
    .option("-q, --quiet", "print only the path and, with --lease, the lease id on the next line")
    .action(async (name: string, opts: { policy?: PullPolicyWord; lease?: string; json?: boolean; quiet?: boolean }) => (await actions()).resolve(global(), name, opts));

  const leases = program.command("leases").description("leases services hold on installs");
  leases
    .command("list [name]")
    .description("the live leases, of one model or of all, the one ending first first: id, model, expiry, holder")
    .option("--json", "one proto3-JSON LeaseInfo per line")
    .action(async (name: string | undefined, opts: { json?: boolean }) => (await actions()).listLeases(global(), name ?? "", opts));
  leases
    .command("release <id>")
    .description("end a lease before it expires (exit 3 when no live lease has that id)")
    .action(async (id: string) => (await actions()).releaseLease(global(), id));

  program
    .command("apply")
    .description("bring the registry to a models file (YAML or JSON) and print the plan: create, update (with the fields that change), delete, unchanged")
    .requiredOption("-f, --file <file>", "the models file")
    .option("--dry-run", "only print the plan; change nothing")
    .option("--prune", "also delete the models the file does not list (never those a server's --models-file manages)")
    .option("--json", "one proto3-JSON ModelChange per line")
    .action(async (opts: { file: string; dryRun?: boolean; prune?: boolean; json?: boolean }) => (await actions()).apply(global(), opts));

  program
    .command("cache")
    .description("the cache as a whole: stored vs logical bytes, free space, every install least recently used first")
    .option("--json", "the proto3-JSON DescribeCacheResponse")
    .action(async (opts: { json?: boolean }) => (await actions()).describeCache(global(), opts));

  program
    .command("prune")
    .description("remove content no install references, partial downloads no model needs, and leftovers")
    .option("--dry-run", "only report what would be removed")
    .option("--json", "the proto3-JSON PruneCacheResponse")
    .action(async (opts: { dryRun?: boolean; json?: boolean }) => (await actions()).prune(global(), opts));

  const secrets = program.command("secrets").description("store and remove hub credentials (never shown again)");
  secrets
    .command("put <alias>")
    .description("store a secret read from stdin (or --from-file), never from the command line")
    .option("--from-file <path>", "read the secret from this file")
    .action(async (alias: string, opts: { fromFile?: string }) => (await actions()).putSecret(global(), alias, opts));
  secrets
    .command("rm <alias>")
    .description("remove a stored secret")
    .action(async (alias: string) => (await actions()).deleteSecret(global(), alias));
}
