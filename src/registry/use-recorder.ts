// When each model was last used, recorded without a registry write per use: a
// busy model is resolved thousands of times a second, and each write would
// take the model's record lock. Uses are kept in memory, shown at once (every
// reader of a record overlays them), and written to the record in the
// background at most once a second per model, and when the server stops. A
// crash loses at most the last second of uses, which only orders evictions.
import type { ModelRecord } from "./model-record.js";
import type { Registry } from "./open-registry.js";

const FLUSH_AFTER_MS = 1000;

export class UseRecorder {
  private readonly pending = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();

  constructor(private readonly registry: Registry) {}

  record(name: string, atMs = Date.now()): void {
    this.pending.set(name, Math.max(atMs, this.pending.get(name) ?? 0));
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.flushing = this.flushing.then(() => this.flush());
    }, FLUSH_AFTER_MS);
    // a stopping server flushes in close(); the timer alone must not keep a process alive
    this.timer.unref();
  }

  /** `record` with the uses not yet written. */
  overlay(record: ModelRecord): ModelRecord {
    const pending = this.pending.get(record.name);
    return pending !== undefined && pending > (record.lastUsedAtMs ?? 0) ? { ...record, lastUsedAtMs: pending } : record;
  }

  /** Writes the pending uses; a model unregistered meanwhile is skipped. */
  async flush(): Promise<void> {
    const uses = [...this.pending];
    this.pending.clear();
    for (const [name, atMs] of uses) {
      await this.registry.records.run(name, undefined, async () => {
        const current = await this.registry.models.get(name);
        if (current === undefined) return;
        // leaves updatedAtMs alone: a use changes neither the spec nor the install
        if (atMs > (current.lastUsedAtMs ?? 0)) await this.registry.models.put(name, { ...current, lastUsedAtMs: atMs });
      });
    }
  }

  /** Writes what is pending and stops the timer: before the registry closes. */
  async close(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.flushing;
    await this.flush();
  }
}
