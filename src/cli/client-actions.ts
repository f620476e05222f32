// What the client commands do once their flags are parsed: connect to the
// server, make the call, print the answer. Loaded only when a client command
// runs, so that `--help` and usage errors load no gRPC, protobuf or
// progress-bar code.
import { readFile } from "node:fs/promises";
import { type ServiceError, status } from "@grpc/grpc-js";
import { resolve as resolvePath } from "node:path";
import {
  CacheStatus,
  ChangeAction,
  ModelChange,
  DescribeCacheResponse,
  ResolveModelResponse,
  InspectCacheResponse,
  LeaseInfo,
  Model,
  type ModelCacheServiceClient,
  type ModelSpec,
  ModelStatus,
  PruneCacheResponse,
  PullPolicy,
  PullResponse,
  Task,
  TrustPolicy,
} from "../../generated/modelcache/v1/model_cache.js";
import { type Connection, EXIT, call, connect, connectWithin, reportError } from "./client.js";
import { WORDING, type Wording } from "./flag-words.js";
import { protoJson } from "./proto-json.js";
import type { PullProgress } from "./pull-progress.js";

/** The program-wide flags every client command takes. */
export interface Global {
  address: string;
  token?: string;
  tls: boolean;
  tlsCa?: string;
  tlsClientCert?: string;
  tlsClientKey?: string;
  connectTimeout: string;
}

export interface RegisterOptions {
  source: string;
  dimensions: number;
  /** unset: the default for the source (spec-defaults) */
  revision?: string;
  credentialAlias?: string;
  pullPolicy?: PullPolicyWord;
  include?: string[];
  exclude?: string[];
  pin?: boolean;
  json?: boolean;
}

/** Only the fields given change; `false` for include/exclude is --no-include/--no-exclude: clear the list. */
export interface UpdateOptions {
  source?: string;
  dimensions?: number;
  revision?: string;
  credentialAlias?: string;
  pullPolicy?: PullPolicyWord;
  include?: string[] | false;
  exclude?: string[] | false;
  pin?: boolean;
  json?: boolean;
}

export type PullPolicyWord = "never" | "if-missing" | "always";

const PULL_POLICY: Record<PullPolicyWord, PullPolicy> = {
  never: PullPolicy.PULL_POLICY_NEVER,
  "if-missing": PullPolicy.PULL_POLICY_IF_MISSING,
  always: PullPolicy.PULL_POLICY_ALWAYS,
};

function connection(options: Global): Connection {
  const files = options.tlsCa || options.tlsClientCert || options.tlsClientKey;
  return {
    address: options.address,
    token: options.token || undefined,
    tls: files ? { ca: options.tlsCa, cert: options.tlsClientCert, key: options.tlsClientKey } : options.tls,
  };
}

/** Runs one command's work against the server and sets the exit code from its outcome. */
async function run(global: Global, work: (client: ReturnType<typeof connect>) => Promise<number | void>, wording?: Wording): Promise<void> {
  const target = connection(global);
  const client = connect(target);
  const watchdog = connectWithin(client, global.address, Number(global.connectTimeout));
  try {
    process.exitCode = (await Promise.race([work(client), watchdog.connected])) ?? EXIT.ok;
  } catch (err) {
    process.exitCode = reportError(err, target, wording);
  } finally {
    watchdog.stop();
    client.close();
  }
}

export const listModels = (global: Global, opts: { json?: boolean }) =>
  run(global, async (client) => {
    const { models: all } = await call(client, "listModels", {});
    showModels(all, opts.json);
  });

export const getModel = (global: Global, name: string, opts: { json?: boolean }) =>
  run(global, async (client) => {
    const { model } = await call(client, "getModel", { name });
    showModels([model!], opts.json);
  });

export const registerModel = (global: Global, name: string, opts: RegisterOptions) =>
  run(global, async (client) => {
    // the defaults a models file gets, for the fields left out
    const { DEFAULT_TASK, defaultRevision } = await import("../models-file/spec-defaults.js");
    const spec: ModelSpec = {
      name,
      source: opts.source,
      revision: opts.revision ?? defaultRevision(opts.source),
      task: Task[`TASK_${DEFAULT_TASK.toUpperCase()}` as keyof typeof Task],
      dimensions: opts.dimensions,
      engine: 0,
      pullPolicy: opts.pullPolicy ? PULL_POLICY[opts.pullPolicy] : 0,
      trustPolicy: TrustPolicy.TRUST_POLICY_UNSPECIFIED,
      acknowledgeRemoteCodeRisk: false,
      credentialAlias: opts.credentialAlias ?? "",
      include: opts.include ?? [],
      exclude: opts.exclude ?? [],
      pinned: opts.pin ?? false,
    };
    const { model } = await call(client, "registerModel", { model: spec });
    showModels([model!], opts.json);
  }, WORDING.spec);

/**
 * UpdateModel replaces the whole spec; this command changes only the fields
 * given: it reads the model, changes those fields and sends the result with
 * the updated_at it read (if_updated_at). A change by someone else between
 * the read and the write makes the server refuse it (ABORTED) rather than
 * overwrite that change: the command reads again and retries.
 */
export const updateModel = (global: Global, name: string, opts: UpdateOptions) =>
  run(global, async (client) => {
    const changes = specChanges(opts);
    if (Object.keys(changes).length === 0) {
      process.stderr.write(`error: give at least one field to change (--source, --revision, --dimensions, --include, ...)\nhint: 'modelcache models update --help' lists them\n`);
      return EXIT.usage;
    }
    const { before, model } = await updateWhileUnchanged(client, name, changes);
    showModels([model!], opts.json);
    const stale = installedFrom(before!, model!);
    if (stale.length > 0) {
      const note = `the install of ${name} was pulled with the old ${stale.join(", ")}: pull again to apply ('modelcache pull ${name}')`;
      process[opts.json ? "stderr" : "stdout"].write(`${opts.json ? "note: " : ""}${note}\n`);
    }
  }, WORDING.spec);

/**
 * Reads the model and sends it back with `changes`, only while nobody else
 * changed it meanwhile (if_updated_at); a lost race reads again, a few times.
 */
async function updateWhileUnchanged(client: ModelCacheServiceClient, name: string, changes: Partial<ModelSpec>): Promise<{ before: Model; model: Model }> {
  for (let attempt = 1; ; attempt++) {
    const { model: before } = await call(client, "getModel", { name });
    try {
      const { model } = await call(client, "updateModel", { name, model: { ...specOf(before!), ...changes }, ifUpdatedAt: before!.updatedAt });
      return { before: before!, model: model! };
    } catch (err) {
      if ((err as Partial<ServiceError>).code !== status.ABORTED || attempt === 5) throw err;
    }
  }
}

/** The spec fields an update's flags set. */
function specChanges(opts: UpdateOptions): Partial<ModelSpec> {
  const changes: Partial<ModelSpec> = {};
  if (opts.source !== undefined) changes.source = opts.source;
  if (opts.revision !== undefined) changes.revision = opts.revision;
  if (opts.dimensions !== undefined) changes.dimensions = opts.dimensions;
  if (opts.credentialAlias !== undefined) changes.credentialAlias = opts.credentialAlias;
  if (opts.pullPolicy !== undefined) changes.pullPolicy = PULL_POLICY[opts.pullPolicy];
  if (opts.include !== undefined) changes.include = opts.include || [];
  if (opts.exclude !== undefined) changes.exclude = opts.exclude || [];
  if (opts.pin !== undefined) changes.pinned = opts.pin;
  return changes;
}

/** A registered model's spec, as UpdateModel takes it back. */
function specOf(m: Model): ModelSpec {
  return {
    name: m.name,
    source: m.source,
    revision: m.revision,
    task: m.task,
    dimensions: m.dimensions,
    engine: m.engine,
    pullPolicy: m.pullPolicy,
    trustPolicy: m.trustPolicy,
    // a Model does not repeat the acknowledgement, but the registry holds remote code only with it
    acknowledgeRemoteCodeRisk: m.trustPolicy === TrustPolicy.TRUST_POLICY_ALLOW_REMOTE_CODE,
    credentialAlias: m.credentialAlias,
    include: m.include,
    exclude: m.exclude,
    pinned: m.pinned,
  };
}

/** The fields deciding what a pull installs that changed while an install made with the old ones is in place. */
function installedFrom(before: Model, after: Model): string[] {
  if (before.cacheDir === "") return [];
  const same = (a: string | string[], b: string | string[]) => JSON.stringify(a) === JSON.stringify(b);
  return (["source", "revision", "include", "exclude"] as const).filter((field) => !same(before[field], after[field]));
}

export const unregisterModel = (global: Global, name: string, opts: { dropCache?: boolean }) =>
  run(global, async (client) => {
    await call(client, "unregisterModel", { name, dropCache: opts.dropCache ?? false });
    process.stdout.write(`unregistered ${name}\n`);
  }, WORDING.unregister);

export const pull = (global: Global, name: string, opts: { fixtureDir?: string; force?: boolean; detach?: boolean; json?: boolean }) =>
  run(
    global,
    async (client) => {
      // bars on a terminal; plain lines (one per file) otherwise
      const bars: PullProgress | undefined = process.stdout.isTTY && !opts.json && !opts.detach ? new (await import("./pull-progress.js")).PullProgress(bytes) : undefined;
      return new Promise<number>((resolve, reject) => {
        const stream = client.pull({ name, fixtureDir: opts.fixtureDir ? resolvePath(opts.fixtureDir) : "", credentialAlias: "", force: opts.force ?? false, detach: opts.detach ?? false });
        const started = performance.now();
        let interrupted = false;
        // --detach: the server marks the job detached when the call attaches, before its first event,
        // and a detached job runs to its end without clients; so once one event came, this client may go
        let left = false;
        const onSigint = () => {
          interrupted = true;
          stream.cancel();
        };
        process.once("SIGINT", onSigint);
        stream.on("data", (event: PullResponse) => {
          if (left) return;
          if (opts.detach) {
            left = true;
            if (opts.json) print(protoJson("modelcache.v1.PullResponse", PullResponse.encode(event).finish()));
            else process.stdout.write(`${detachedLine(name, event)}\n`);
            return stream.cancel();
          }
          if (opts.json) return print(protoJson("modelcache.v1.PullResponse", PullResponse.encode(event).finish()));
          if (event.queued) process.stdout.write(`queued: position ${event.queued.position}\n`);
          if (event.started) process.stdout.write(`pulling ${name} from ${event.started.source}: ${event.started.fileCount} files, ${bytes(event.started.totalBytes)}\n`);
          if (event.started?.evictedModels.length) process.stdout.write(`evicted to make room: ${event.started.evictedModels.join(", ")} (still registered)\n`);
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
          if (left) resolve(EXIT.ok);
          else if (interrupted) {
            // the stream does not say who else follows this pull, so both outcomes are told
            process.stderr.write(
              `interrupted: this client stopped following the pull of ${name}. If no other client follows it and it was not started with detach, ` +
                `the server cancels it and the previous install (if any) stays as it was; otherwise the pull goes on. 'modelcache inspect ${name}' shows what is installed\n`,
            );
            resolve(EXIT.interrupted);
          } else reject(err);
        });
        stream.on("end", () => {
          process.off("SIGINT", onSigint);
          resolve(EXIT.ok);
        });
      });
    },
    WORDING.pull,
  );

/** What a detached pull's client says as it leaves, from the one event it waited for. */
function detachedLine(name: string, event: PullResponse): string {
  const follow = `it runs on the server without this client; 'modelcache pull ${name}' follows it, 'modelcache inspect ${name}' shows what is installed`;
  if (event.queued) return `pull of ${name} queued at position ${event.queued.position}: ${follow}`;
  if (event.started) return `pull of ${name} started from ${event.started.source}: ${event.started.fileCount} files, ${bytes(event.started.totalBytes)}; ${follow}`;
  if (event.completed) return `${name} is installed at ${event.completed.cacheDir}`;
  return `pull of ${name} under way: ${follow}`;
}

export const inspect = (global: Global, name: string, opts: { deep?: boolean; json?: boolean }) =>
  run(global, async (client) => {
    const report = await call(client, "inspectCache", { name, deep: opts.deep ?? false });
    if (opts.json) print(protoJson("modelcache.v1.InspectCacheResponse", InspectCacheResponse.encode(report).finish()));
    else {
      table([{ model: name, status: word(CacheStatus[report.status]), footprint: bytes(report.footprintBytes), files: report.manifest?.files.length ?? 0, dir: report.cacheDir }]);
      if (report.detail) process.stdout.write(`${report.detail}\n`);
    }
    return report.status === CacheStatus.CACHE_STATUS_UNHEALTHY ? EXIT.unhealthy : report.status === CacheStatus.CACHE_STATUS_MISSING ? EXIT.missing : EXIT.ok;
  });

export const drop = (global: Global, name: string, opts: { force?: boolean }) =>
  run(global, async (client) => {
    const dropped = await call(client, "dropCache", { name, force: opts.force ?? false });
    process.stdout.write(dropped.removed ? `dropped ${name}: ${bytes(dropped.freedBytes)} freed\n` : `${name} had nothing installed\n`);
  }, WORDING.drop);

export const resolve = (global: Global, name: string, opts: { policy?: PullPolicyWord; lease?: string; json?: boolean; quiet?: boolean }) =>
  run(global, async (client) => {
    const leaseSeconds = opts.lease ? Number(opts.lease) : 0;
    const askedAt = Date.now();
    const resolved = await call(client, "resolveModel", { name, pullPolicy: opts.policy ? PULL_POLICY[opts.policy] : 0, leaseSeconds, credentialAlias: "" });
    const capped = resolved.leaseId ? leaseCap(askedAt + leaseSeconds * 1000, resolved.leaseExpiresAt) : undefined;
    if (opts.json || opts.quiet) {
      // the output stays machine-readable; the cap still reaches the person who runs it
      if (capped) process.stderr.write(`warning: ${capped}\n`);
      if (opts.json) return print(protoJson("modelcache.v1.ResolveModelResponse", ResolveModelResponse.encode(resolved).finish()));
      // the path, then the lease id, each alone on its line: read -r dir; read -r lease
      process.stdout.write(`${resolved.cacheDir}\n${resolved.leaseId ? `${resolved.leaseId}\n` : ""}`);
      return;
    }
    // the path alone on the first line, for $(modelcache resolve NAME | head -1)
    process.stdout.write(`${resolved.cacheDir}\n`);
    if (resolved.leaseId) process.stdout.write(`lease ${resolved.leaseId} until ${resolved.leaseExpiresAt?.toISOString() ?? ""}${capped ? ` (${capped})` : ""}\n`);
  }, WORDING.resolve);

/**
 * Whether the server granted a shorter lease than asked (its
 * --max-lease-seconds), told by comparing the asked end, measured here before
 * the call, with the granted one. Two seconds of slack keep a server clock a
 * little behind this one from reading as a cap.
 */
function leaseCap(askedEndMs: number, grantedEnd: Date | undefined): string | undefined {
  if (!grantedEnd || grantedEnd.getTime() >= askedEndMs - 2000) return undefined;
  return `capped by the server's --max-lease-seconds: asked until ${new Date(askedEndMs).toISOString()}, granted until ${grantedEnd.toISOString()}`;
}

export const listLeases = (global: Global, name: string, opts: { json?: boolean }) =>
  run(global, async (client) => {
    const { leases } = await call(client, "listLeases", { name });
    if (opts.json) {
      for (const lease of leases) print(protoJson("modelcache.v1.LeaseInfo", LeaseInfo.encode(lease).finish()));
      return;
    }
    // the one ending first first, as the server sorts them
    table(leases.map((l) => ({ lease: l.leaseId, model: l.name, "expires at": l.expiresAt?.toISOString() ?? "", holder: l.holder })));
  });

export const releaseLease = (global: Global, id: string) =>
  run(global, async (client) => {
    const { released } = await call(client, "releaseLease", { leaseId: id });
    process.stdout.write(released ? `released lease ${id}\n` : `no live lease ${id} (unknown, or it already ended)\n`);
    return released ? EXIT.ok : EXIT.notFound;
  }, WORDING.release);

export const describeCache = (global: Global, opts: { json?: boolean }) =>
  run(global, async (client) => {
    const described = await call(client, "describeCache", {});
    if (opts.json) return print(protoJson("modelcache.v1.DescribeCacheResponse", DescribeCacheResponse.encode(described).finish()));
    process.stdout.write(
      `${described.cacheRoot}: ${bytes(described.storedBytes)} stored for ${bytes(described.logicalBytes)} of installs, ` +
        `${bytes(described.reclaimableBytes)} reclaimable (modelcache prune); filesystem ${bytes(described.filesystemFreeBytes)} free of ${bytes(described.filesystemTotalBytes)}; ` +
        `quota ${described.maxBytes > 0 ? bytes(described.maxBytes) : "none"}, ${bytes(described.evictableBytes)} evictable\n`,
    );
    // least recently used first, as the server sorts them
    table(described.models.map((m) => ({ model: m.name, size: bytes(m.sizeBytes), exclusive: bytes(m.exclusiveBytes), "last used": m.lastUsedAt?.toISOString() ?? "", pinned: m.pinned ? "yes" : "", leases: m.leases })));
  });

export const prune = (global: Global, opts: { dryRun?: boolean; json?: boolean }) =>
  run(global, async (client) => {
    const pruned = await call(client, "pruneCache", { dryRun: opts.dryRun ?? false });
    if (opts.json) return print(protoJson("modelcache.v1.PruneCacheResponse", PruneCacheResponse.encode(pruned).finish()));
    const what = `${pruned.blobsRemoved} unreferenced blob${pruned.blobsRemoved === 1 ? "" : "s"}, ${pruned.partialsRemoved} partial download${pruned.partialsRemoved === 1 ? "" : "s"}: ${bytes(pruned.freedBytes)}`;
    process.stdout.write(pruned.dryRun ? `would remove ${what}\n` : `removed ${what}\n`);
  });

export const putSecret = (global: Global, alias: string, opts: { fromFile?: string }) =>
  run(global, async (client) => {
    const value = (opts.fromFile ? await readFile(opts.fromFile, "utf8") : await readSecretInput(alias)).trim();
    if (value === "") {
      const from = opts.fromFile ? `--from-file ${opts.fromFile}` : "stdin";
      process.stderr.write(`error: the secret read from ${from} is empty; nothing was stored\nhint: pipe the secret in (printf '%s' "$HF_TOKEN" | modelcache secrets put ${alias}), or give --from-file FILE\n`);
      return EXIT.usage;
    }
    await call(client, "putSecret", { alias, value });
    process.stdout.write(`stored a secret under ${alias}\n`);
  });

export const deleteSecret = (global: Global, alias: string) =>
  run(global, async (client) => {
    const { removed } = await call(client, "deleteSecret", { alias });
    process.stdout.write(removed ? `removed ${alias}\n` : `${alias} had no secret\n`);
  });

/**
 * Applies a models file through ApplyModels and prints the plan. The file is
 * validated here first, so a mistake is reported with its line before
 * anything is sent.
 */
export async function apply(global: Global, opts: { file: string; dryRun?: boolean; prune?: boolean; json?: boolean }): Promise<void> {
  const { readModelsFile } = await import("../models-file/parse-models-file.js");
  let specs;
  try {
    specs = await readModelsFile(opts.file);
  } catch (err) {
    process.stderr.write(`error: ${(err as Error).message}\n`);
    process.exitCode = EXIT.usage;
    return;
  }
  const { specToProto } = await import("../grpc/convert.js");
  await run(global, async (client) => {
    const { changes } = await call(client, "applyModels", { models: specs.map(specToProto), dryRun: opts.dryRun ?? false, prune: opts.prune ?? false });
    if (opts.json) {
      for (const change of changes) print(protoJson("modelcache.v1.ModelChange", ModelChange.encode(change).finish()));
      return;
    }
    // a dry run shows the updates of models the server's models file manages; applying refuses them
    const fileManaged = opts.dryRun ? new Set((await call(client, "listModels", {})).models.filter((m) => m.managedBy === "models-file").map((m) => m.name)) : new Set<string>();
    const refused = (c: ModelChange) => c.action === ChangeAction.CHANGE_ACTION_UPDATE && fileManaged.has(c.name);
    const marked = changes.some(refused);
    table(
      changes.map((c) => ({
        action: ChangeAction[c.action].replace(/^CHANGE_ACTION_/, "").toLowerCase(),
        name: c.name,
        changes: c.changedFields.join(", "),
        ...(marked ? { note: refused(c) ? "refused: managed by the models file" : "" } : {}),
      })),
    );
    const count = (action: ChangeAction) => changes.filter((c) => c.action === action && !refused(c)).length;
    const [create, update, remove, unchanged] = [ChangeAction.CHANGE_ACTION_CREATE, ChangeAction.CHANGE_ACTION_UPDATE, ChangeAction.CHANGE_ACTION_DELETE, ChangeAction.CHANGE_ACTION_UNCHANGED].map(count);
    const refusals = changes.filter(refused).length;
    const note = refusals > 0 ? `, ${refusals} refused (the models file the server follows manages ${refusals === 1 ? "it" : "them"}: change ${refusals === 1 ? "it" : "them"} there)` : "";
    process.stdout.write(
      opts.dryRun
        ? `dry run: ${create} to create, ${update} to update, ${remove} to delete, ${unchanged} unchanged${note}; nothing was changed\n`
        : `applied: ${create} created, ${update} updated, ${remove} deleted, ${unchanged} unchanged\n`,
    );
  });
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
  if (process.stdin.isTTY) return (await import("read")).read({ prompt: `secret for ${alias} (not shown): `, silent: true, replace: "", output: process.stderr, terminal: true });
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}
