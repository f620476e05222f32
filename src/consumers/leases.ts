// Leases: a service that uses a model's install holds one so the install is
// neither evicted nor dropped under it. Each lease is a LevelDB record, so
// leases survive a restart; a copy in memory answers the frequent questions
// ("is this model leased?") without a read. A lease ends when it expires,
// when it is released, or when a forced DropCache ends every lease of the
// model. Expired leases are forgotten lazily: a lease is live only while its
// end lies in the future, whatever the records still hold.
import { randomUUID } from "node:crypto";
import { ModelCacheError, quote } from "../errors.js";
import type { LevelSublevel } from "../registry/open-registry.js";

export interface Lease {
  id: string;
  /** the model leased */
  name: string;
  grantedAtMs: number;
  expiresAtMs: number;
  /** who took it: the caller's token name, else its peer address (absent in leases of earlier versions) */
  holder?: string;
}

/** --max-lease-seconds unless given: a day */
export const DEFAULT_MAX_LEASE_SECONDS = 86_400;

const SWEEP_INTERVAL_MS = 10_000;

export class Leases {
  private readonly byId = new Map<string, Lease>();
  /** the same leases by model, so a model's question reads only its own */
  private readonly byName = new Map<string, Map<string, Lease>>();
  private readonly sweptAtMs = new Map<string, number>();
  /** leases granted in this turn of the event loop, stored together in one batch */
  private pending: { lease: Lease; resolve: () => void; reject: (err: unknown) => void }[] = [];

  constructor(
    private readonly records: LevelSublevel<Lease>,
    /** the longest lease granted; longer requests are shortened to it */
    readonly maxSeconds: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Reads the stored leases, deleting those that expired while the server was down. */
  async load(): Promise<this> {
    const expired: string[] = [];
    for await (const [id, lease] of this.records.iterator()) {
      if (lease.expiresAtMs > this.now()) this.remember(lease);
      else expired.push(id);
    }
    if (expired.length > 0) await this.records.batch(expired.map((key) => ({ type: "del" as const, key })));
    return this;
  }

  /** A new lease on `name` for `seconds` (at most maxSeconds), stored before it is returned. */
  async grant(name: string, seconds: number, holder: string): Promise<Lease> {
    await this.forgetExpired(name);
    const now = this.now();
    const lease: Lease = { id: randomUUID(), name, grantedAtMs: now, expiresAtMs: now + Math.min(seconds, this.maxSeconds) * 1000, holder };
    await this.store(lease);
    this.remember(lease);
    return lease;
  }

  /**
   * Stores a lease, together with the others granted in the same turn of the
   * event loop: one LevelDB batch for many concurrent ResolveModel calls
   * instead of a write each. Every lease is stored before its grant returns.
   */
  private store(lease: Lease): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.pending.push({ lease, resolve, reject }) > 1) return;
      setImmediate(() => {
        const batch = this.pending;
        this.pending = [];
        this.records.batch(batch.map((p) => ({ type: "put" as const, key: p.lease.id, value: p.lease }))).then(
          () => batch.forEach((p) => p.resolve()),
          (err: unknown) => batch.forEach((p) => p.reject(err)),
        );
      });
    });
  }

  /** Ends a live lease; false when `id` names no lease, or one that already expired. */
  async release(id: string): Promise<boolean> {
    const lease = this.byId.get(id);
    if (!lease) return false;
    this.forget(lease);
    await this.records.del(id);
    return lease.expiresAtMs > this.now();
  }

  /** The model's live leases, the one ending last first. */
  live(name: string): Lease[] {
    const now = this.now();
    return [...(this.byName.get(name)?.values() ?? [])].filter((l) => l.expiresAtMs > now).sort((a, b) => b.expiresAtMs - a.expiresAtMs);
  }

  /** Every live lease, or those of one model, the one ending first first. */
  list(name?: string): Lease[] {
    const now = this.now();
    const leases = name === undefined ? [...this.byId.values()] : [...(this.byName.get(name)?.values() ?? [])];
    return leases.filter((l) => l.expiresAtMs > now).sort((a, b) => a.expiresAtMs - b.expiresAtMs || a.id.localeCompare(b.id));
  }

  count(name: string): number {
    return this.live(name).length;
  }

  /** Refuses `operation` while the model is leased, naming the lease that ends last and when. */
  refuseWhileLeased(name: string, operation: string, howToForce: string): void {
    const leases = this.live(name);
    if (leases.length === 0) return;
    const last = leases[0]!;
    const others = leases.length > 1 ? ` (and ${leases.length - 1} more)` : "";
    throw new ModelCacheError(
      "failed_precondition",
      `model '${name}' is leased by a service using it: lease ${quote(last.id)}${others} ends at ${new Date(last.expiresAtMs).toISOString()}; ${operation} would take its files away: wait for the lease to end, release it (ReleaseLease), or ${howToForce}`,
    );
  }

  /** Ends every lease of `name`; returns how many were live. */
  async endAll(name: string): Promise<number> {
    const now = this.now();
    const ended = [...(this.byName.get(name)?.values() ?? [])];
    for (const lease of ended) this.forget(lease);
    if (ended.length > 0) await this.records.batch(ended.map((l) => ({ type: "del" as const, key: l.id })));
    return ended.filter((l) => l.expiresAtMs > now).length;
  }

  /**
   * Deletes the model's expired leases, so a model leased again and again
   * keeps only its live ones; at most once per model per sweep interval, so a
   * busy model's grants stay cheap.
   */
  private async forgetExpired(name: string): Promise<void> {
    const now = this.now();
    if ((this.sweptAtMs.get(name) ?? 0) + SWEEP_INTERVAL_MS > now) return;
    this.sweptAtMs.set(name, now);
    const expired = [...(this.byName.get(name)?.values() ?? [])].filter((l) => l.expiresAtMs <= now);
    if (expired.length === 0) return;
    for (const lease of expired) this.forget(lease);
    await this.records.batch(expired.map((l) => ({ type: "del" as const, key: l.id })));
  }

  private remember(lease: Lease): void {
    this.byId.set(lease.id, lease);
    let leases = this.byName.get(lease.name);
    if (!leases) this.byName.set(lease.name, (leases = new Map()));
    leases.set(lease.id, lease);
  }

  private forget(lease: Lease): void {
    this.byId.delete(lease.id);
    const leases = this.byName.get(lease.name);
    leases?.delete(lease.id);
    if (leases?.size === 0) this.byName.delete(lease.name);
  }
}
