// The client commands: they talk to a running server through the same
// public gRPC API as every other service. Human-readable by default;
// --json prints proto3-JSON objects, one per line, and nothing else.
import { readFile } from "node:fs/promises";
import { read } from "read";
import { resolve as resolvePath } from "node:path";
import type { Command } from "commander";
import {
  CacheStatus,
  InspectCacheResponse,
  Model,
  ModelStatus,
  PullPolicy,
  PullResponse,
  Task,
  TrustPolicy,
} from "../../generated/modelcache/v1/model_cache.js";
import { type Connection, EXIT, call, connect, reportError } from "./client.js";
import { protoJson } from "./proto-json.js";
import { PullProgress } from "./pull-progress.js";

interface Global {
  address: string;
  token?: string;
  tls: boolean;
  tlsCa?: string;
  tlsClientCert?: string;
  tlsClientKey?: string;
}

function connection(options: Global): Connection {
  const files = options.tlsCa || options.tlsClientCert || options.tlsClientKey;
  return {
    address: options.address,
    token: options.token || undefined,
    tls: files ? { ca: options.tlsCa, cert: options.tlsClientCert, key: options.tlsClientKey } : options.tls,
  };
}

export function addClientCommands(program: Command, option: (flags: string, description: string, defaultValue?: string) => import("commander").Option): void {
  const address = () => (program.opts() as Global).address;
  const run = (work: (client: ReturnType<typeof connect>) => Promise<number | void>) => async () => {
    const client = connect(connection(program.opts() as Global));
    try {
      process.exitCode = (await work(client)) ?? EXIT.ok;
    } catch (err) {
      process.exitCode = reportError(err, address());
    } finally {
      client.close();
    }
  };
  program.addOption(option("--address <host:port>", "the server to talk to", "127.0.0.1:50051"));
  program.addOption(option("--token <token>", "access token for a server with --auth-tokens (prefer the env var: argv is visible to other users)"));
  program.addOption(option("--tls", "connect over TLS, trusting the system's CAs"));
  program.addOption(option("--tls-ca <file>", "connect over TLS, trusting this PEM CA bundle"));
  program.addOption(option("--tls-client-cert <file>", "PEM client certificate, for a server with --tls-client-ca"));
  program.addOption(option("--tls-client-key <file>", "PEM private key of --tls-client-cert"));

  const models = program.command("models").description("register, list, show and remove models");
  models
    .command("list")
    .description("every registered model")
    .option("--json", "one proto3-JSON Model per line")
    .action((opts: { json?: boolean }) =>
      run(async (client) => {
        const { models: all } = await call(client, "listModels", {});
        showModels(all, opts.json);
      })(),
    );
  models
    .command("get <name>")
    .description("one model")
    .option("--json", "the proto3-JSON Model")
    .action((name: string, opts: { json?: boolean }) =>
      run(async (client) => {
        const { model } = await call(client, "getModel", { name });
        showModels([model!], opts.json);
      })(),
    );
  for (const verb of ["register", "update"] as const) {
    models
      .command(`${verb} <name>`)
      .description(verb === "register" ? "add a model to the registry" : "replace a model's whole spec")
      .requiredOption("--source <repo>", "hub repo id, e.g. sentence-transformers/all-MiniLM-L6-v2")
      .requiredOption("--dimensions <n>", "embedding width")
      .option("--revision <rev>", "commit sha, tag or branch", "main")
      .option("--credential-alias <alias>", "vault alias of the hub token")
      .option("--pull-policy <policy>", "never, if-missing or always")
      .option("--include <glob...>", "only files matching these globs")
      .option("--exclude <glob...>", "never files matching these globs")
      .option("--json", "the proto3-JSON Model")
      .action((name: string, opts: { source: string; dimensions: string; revision: string; credentialAlias?: string; pullPolicy?: string; include?: string[]; exclude?: string[]; json?: boolean }) =>
        run(async (client) => {
          const spec = {
            name,
            source: opts.source,
            revision: opts.revision,
            task: Task.TASK_EMBEDDING,
            dimensions: Number(opts.dimensions),
            engine: 0,
            pullPolicy: opts.pullPolicy ? (({ never: PullPolicy.PULL_POLICY_NEVER, "if-missing": PullPolicy.PULL_POLICY_IF_MISSING, always: PullPolicy.PULL_POLICY_ALWAYS } as Record<string, PullPolicy>)[opts.pullPolicy] ?? 99) : 0,
            trustPolicy: TrustPolicy.TRUST_POLICY_UNSPECIFIED,
            acknowledgeRemoteCodeRisk: false,
            credentialAlias: opts.credentialAlias ?? "",
            include: opts.include ?? [],
            exclude: opts.exclude ?? [],
          };
          const { model } = verb === "register" ? await call(client, "registerModel", { model: spec }) : await call(client, "updateModel", { name, model: spec });
          showModels([model!], opts.json);
        })(),
      );
  }
  models
    .command("rm <name>")
    .description("unregister a model")
    .option("--drop-cache", "also remove its installed artifacts")
    .action((name: string, opts: { dropCache?: boolean }) =>
      run(async (client) => {
        await call(client, "unregisterModel", { name, dropCache: opts.dropCache ?? false });
        process.stdout.write(`unregistered ${name}\n`);
      })(),
    );

  program
    .command("pull <name>")
    .description("install a model's artifacts, showing each file as it lands")
    .option("--fixture-dir <dir>", "install from this local directory")
    .option("--force", "re-read and re-hash every file")
    .option("--json", "every event as one proto3-JSON line")
    .action((name: string, opts: { fixtureDir?: string; force?: boolean; json?: boolean }) =>
      run(
        (client) =>
          new Promise<number>((resolve, reject) => {
            const stream = client.pull({ name, fixtureDir: opts.fixtureDir ? resolvePath(opts.fixtureDir) : "", credentialAlias: "", force: opts.force ?? false, detach: false });
            const started = performance.now();
            // bars on a terminal; plain lines (one per file) otherwise
            const bars = process.stdout.isTTY && !opts.json ? new PullProgress(bytes) : undefined;
            let interrupted = false;
            const onSigint = () => {
              interrupted = true;
              stream.cancel();
            };
            process.once("SIGINT", onSigint);
            stream.on("data", (event: PullResponse) => {
              if (opts.json) return print(protoJson("modelcache.v1.PullResponse", PullResponse.encode(event).finish()));
              if (event.queued) process.stdout.write(`queued: position ${event.queued.position}\n`);
              if (event.started) process.stdout.write(`pulling ${name} from ${event.started.source}: ${event.started.fileCount} files, ${bytes(event.started.totalBytes)}\n`);
              if (bars) {
                bars.update(event);
                if (event.completed) bars.stop();
              } else if (event.fileCompleted) {
                process.stdout.write(`  ${event.fileCompleted.path}  ${bytes(event.fileCompleted.sizeBytes)}  sha256:${event.fileCompleted.sha256.slice(0, 12)}\n`);
              }
              if (event.completed) {
                const m = event.completed.manifest!;
                process.stdout.write(`installed ${m.files.length} files, ${bytes(m.totalSizeBytes)} in ${((performance.now() - started) / 1000).toFixed(1)} s at ${event.completed.cacheDir}\n`);
              }
            });
            stream.on("error", (err) => {
              bars?.stop();
              process.off("SIGINT", onSigint);
              if (interrupted) {
                process.stderr.write("interrupted: the pull was cancelled and nothing was installed\n");
                resolve(EXIT.interrupted);
              } else reject(err);
            });
            stream.on("end", () => {
              process.off("SIGINT", onSigint);
              resolve(EXIT.ok);
            });
          }),
      )(),
    );

  program
    .command("inspect <name>")
    .description("what is on disk for a model (exit 4 unhealthy, 5 missing)")
    .option("--deep", "re-hash every file")
    .option("--json", "the proto3-JSON InspectCacheResponse")
    .action((name: string, opts: { deep?: boolean; json?: boolean }) =>
      run(async (client) => {
        const report = await call(client, "inspectCache", { name, deep: opts.deep ?? false });
        if (opts.json) print(protoJson("modelcache.v1.InspectCacheResponse", InspectCacheResponse.encode(report).finish()));
        else {
          table([{ model: name, status: word(CacheStatus[report.status]), footprint: bytes(report.footprintBytes), files: report.manifest?.files.length ?? 0, dir: report.cacheDir }]);
          if (report.detail) process.stdout.write(`${report.detail}\n`);
        }
        return report.status === CacheStatus.CACHE_STATUS_UNHEALTHY ? EXIT.unhealthy : report.status === CacheStatus.CACHE_STATUS_MISSING ? EXIT.missing : EXIT.ok;
      })(),
    );

  program
    .command("drop <name>")
    .description("remove a model's artifacts, keep its registration")
    .action((name: string) =>
      run(async (client) => {
        const dropped = await call(client, "dropCache", { name });
        process.stdout.write(dropped.removed ? `dropped ${name}: ${bytes(dropped.freedBytes)} freed\n` : `${name} had nothing installed\n`);
      })(),
    );

  const secrets = program.command("secrets").description("store and remove hub credentials (never shown again)");
  secrets
    .command("put <alias>")
    .description("store a secret read from stdin (or --from-file), never from the command line")
    .option("--from-file <path>", "read the secret from this file")
    .action((alias: string, opts: { fromFile?: string }) =>
      run(async (client) => {
        const value = (opts.fromFile ? await readFile(opts.fromFile, "utf8") : await readSecretInput(alias)).trim();
        await call(client, "putSecret", { alias, value });
        process.stdout.write(`stored a secret under ${alias}\n`);
      })(),
    );
  secrets
    .command("rm <alias>")
    .description("remove a stored secret")
    .action((alias: string) =>
      run(async (client) => {
        const { removed } = await call(client, "deleteSecret", { alias });
        process.stdout.write(removed ? `removed ${alias}\n` : `${alias} had no secret\n`);
      })(),
    );
}

/** Models as proto3-JSON lines, or as a table. */
function showModels(models: Model[], json: boolean | undefined): void {
  if (json) for (const m of models) print(protoJson("modelcache.v1.Model", Model.encode(m).finish()));
  else table(models.map(row));
}

function row(m: Model): Record<string, string | number> {
  return {
    name: m.name,
    status: word(ModelStatus[m.status]),
    source: `${m.source}@${m.revision}`,
    dimensions: m.dimensions,
    size: m.cacheSizeBytes ? bytes(m.cacheSizeBytes) : "",
  };
}

function word(enumName: string | undefined): string {
  return (enumName ?? "").replace(/^[A-Z]+_STATUS_/, "").toLowerCase();
}

function print(json: unknown): void {
  process.stdout.write(`${JSON.stringify(json)}\n`);
}

/** A plain text table: a header line, then one line per row, columns padded. */
function table(rows: Record<string, string | number>[]): void {
  if (rows.length === 0) return void process.stdout.write("(none)\n");
  const keys = Object.keys(rows[0]!);
  const widths = keys.map((k) => Math.max(k.length, ...rows.map((r) => String(r[k]).length)));
  const line = (cells: string[]) => `${cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()}\n`;
  process.stdout.write(line(keys.map((k) => k.toUpperCase())));
  for (const r of rows) process.stdout.write(line(keys.map((k) => String(r[k]))));
}

function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** The secret: typed at a terminal without echo (the `read` package, as npm asks for passwords), else all of stdin. */
async function readSecretInput(alias: string): Promise<string> {
  // terminal: the terminal's own echo goes off even when stderr, where the prompt goes, is redirected
  if (process.stdin.isTTY) return read({ prompt: `secret for ${alias} (not shown): `, silent: true, replace: "", output: process.stderr, terminal: true });
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}
