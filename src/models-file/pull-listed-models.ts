// After the models file is applied, the models it lists are installed in the
// background, through the shared pull queue, as their policy asks: IF_MISSING
// when not installed (or when the apply changed where its files come from),
// ALWAYS every time the file is applied (the source asked for its current
// commit, and pulled only when the install is not of it), NEVER not at all.
// A failed pull is logged and tried again with a growing delay; it never
// stops the server.
import type { Logger } from "pino";
import { inspectInstall } from "../cache/inspect-install.js";
import { withRecordedCorruption } from "../lifecycle/inspect-cache.js";
import { currentCommit } from "../pull/current-commit.js";
import { pullModel } from "../pull/pull-model.js";
import type { ModelRecord } from "../registry/model-record.js";
import type { Runtime } from "../runtime.js";
import type { ModelChange } from "./plan-changes.js";

const FIRST_RETRY_MS = 1_000;
const LAST_RETRY_MS = 5 * 60_000;
/** fields whose change makes an install no longer the spec's */
const SOURCE_FIELDS = new Set(["source", "revision", "include", "exclude"]);

export class BackgroundPulls {
  /** models with a pull loop running, and whether the loop should pull once more after it ends */
  private readonly loops = new Map<string, { again: boolean }>();

  constructor(
    private readonly runtime: Runtime,
    private readonly logger: Logger,
    private readonly signal: AbortSignal,
    private readonly firstRetryMs = FIRST_RETRY_MS,
  ) {}

  /** Starts the pulls that `changes` (an applied plan of the models file) call for. */
  async afterApply(changes: readonly ModelChange[]): Promise<void> {
    for (const change of changes) {
      if (change.action === "delete") continue;
      const record = await this.runtime.registry.models.get(change.name);
      if (!record || record.unregistering) continue;
      const stale = change.changedFields.some((field) => SOURCE_FIELDS.has(field));
      const wanted = record.pullPolicy === "always" || (record.pullPolicy === "if_missing" && (record.status !== "installed" || stale));
      if (wanted) this.pull(change.name);
    }
  }

  /** How many models have a background pull loop running. */
  get running(): number {
    return this.loops.size;
  }

  private pull(name: string): void {
    const loop = this.loops.get(name);
    if (loop) {
      // a loop already runs: it pulls once more, with the spec as it is then
      loop.again = true;
      return;
    }
    const state = { again: false };
    this.loops.set(name, state);
    void this.run(name, state)
      // the registry read failed (it closes at shutdown): the next apply starts the loop again
      .catch((err: unknown) => this.signal.aborted || this.logger.error({ model: name, error: (err as Error).message }, "a background pull of a model of the models file stopped"))
      .finally(() => this.loops.delete(name));
  }

  /** Whether a healthy install of the commit the source names now is there (ALWAYS revalidates; it pulls only a change). */
  private async current(record: ModelRecord): Promise<boolean> {
    // content the background verification found corrupt makes the install unhealthy: pulled again
    const report = withRecordedCorruption(record, await inspectInstall(this.runtime.layout, record.name, false, this.signal));
    if (report.status !== "installed") return false;
    const commit = await currentCommit(this.runtime, record, "", this.signal);
    return commit !== undefined && commit === report.manifest!.resolvedCommit;
  }

  private async run(name: string, state: { again: boolean }): Promise<void> {
    let delay = this.firstRetryMs;
    for (let attempt = 0; ; attempt += 1) {
      if (this.signal.aborted) return;
      const record = await this.runtime.registry.models.get(name);
      // the file (or a later apply) removed it, or it stopped being the file's
      if (!record || record.unregistering || record.managedBy !== "models-file" || record.pullPolicy === "never") return;
      // a retry of an IF_MISSING pull is moot once something else installed the model
      if (attempt > 0 && !state.again && record.pullPolicy === "if_missing" && record.status === "installed") return;
      state.again = false;
      try {
        if (record.pullPolicy === "always" && (await this.current(record))) {
          this.logger.info({ model: name }, "a model of the models file is installed at its source's current commit; nothing to pull");
          if (!state.again) return;
          continue;
        }
        this.logger.info({ model: name, policy: record.pullPolicy }, "pulling a model of the models file in the background");
        // detached: the pull is the server's own, not a client's that may go away
        for await (const event of pullModel(this.runtime, { name, fixtureDir: "", credentialAlias: "", force: false, detach: true }, this.signal)) void event;
        if (!state.again) return;
        delay = this.firstRetryMs;
      } catch (err) {
        if (this.signal.aborted) return;
        this.logger.warn({ model: name, error: (err as Error).message, retryInSeconds: delay / 1000 }, "a background pull of a model of the models file failed; trying again later");
        const waited = await sleep(delay, this.signal);
        if (!waited) return;
        delay = Math.min(delay * 2, LAST_RETRY_MS);
      }
    }
  }
}

/** Waits `ms`; false when the signal aborted first. */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false);
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", stop);
      resolve(true);
    }, ms);
    const stop = () => {
      clearTimeout(timer);
      resolve(false);
    };
    signal.addEventListener("abort", stop, { once: true });
  });
}
