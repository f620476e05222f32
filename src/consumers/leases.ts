// Leases: a service that uses a model's install holds one so the install is
// neither evicted nor dropped under it. Each lease is a LevelDB record, so
// leases survive a restart; a copy in memory answers the frequent questions
// ("is this model leased?") without a read. A lease ends when it expires,
// when it is released, when a forced DropCache ends every lease of the
// model, or when the model is unregistered. A lease is live only while its
// end lies in the future; a periodic sweep deletes the records of the rest.
// A grant and a removal of the install (drop, eviction, unregistration) are
// ordered here: each decides against the other in one step, so one wins.
import { randomUUID } from "node:crypto";
import { ModelCacheError, quote } from "../errors.js";
import type { LevelSublevel } from "../registry/sublevel.js";

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

/** How often the records of expired leases are deleted. */
export const SWEEP_INTERVAL_MS = 60_000;

/** How a removal of an install meets the model's live leases. */
export type RemovalAdmission =
  /** refused while the model is leased: FAILED_PRECONDITION naming the lease */
  | { refuse: { operation: string; howToForce: string } }
  /** the leases end first (DropCache force) */
  | { endLeases: true }
  /** the caller ends the leases itself, at its commit point (UnregisterModel) */
  | { leasesEndLater: true };

/** ResolveModel's answer when a removal won the race with its lease. */
export function droppedWhileResolving(name: string): ModelCacheError {
  return new ModelCacheError("aborted", `the install of model '${name}' was dropped while it was being resolved: resolve it again`);
}

export class Leases {
  private readonly byId = new Map<string, Lease>();
  /** the same leases by model, so a model's question reads only its own */
  private readonly byName = new Map<string, Map<string, Lease>>();
  /** leases granted in this turn of the event loop, stored together in one batch */
  private pending: { lease: Lease; resolve: () => void; reject: (err: unknown) => void }[] = [];
  /** a batch of leases is being written */
  private storing = false;
  /** removals of installs under way, by model */
  private readonly underWay = new Map<string, number>();
  /** bumped when any removal begins or ends: see removalMark */
  private removals = 0;
  private sweeper: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;

  constructor(
    private readonly records: LevelSublevel<Lease>,
    /** the longest lease granted; longer requests are shortened to it */
    readonly maxSeconds: number,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Reads the stored leases, deleting those that expired while the server
   * was down and those of models no longer registered (an unregistration a
   * crash interrupted), so a name registered again starts without leases.
   */
  async load(isRegistered: (name: string) => Promise<boolean>): Promise<this> {
    const ended: string[] = [];
    for await (const [id, lease] of this.records.iterator()) {
      if (lease.expiresAtMs > this.now() && (await isRegistered(lease.name))) this.remember(lease);
      else ended.push(id);
    }
    if (ended.length > 0) await this.records.batch(ended.map((key) => ({ type: "del" as const, key })));
    return this;
  }

  /**
   * A new lease on `name` for `seconds` (at most maxSeconds), stored before
   * it is returned. It counts in memory from the start, before its write, so
   * a removal that comes during the write is refused by it; a removal under
   * way when it starts, or one that ended it during the write (force), wins:
   * ABORTED.
   */
  async grant(name: string, seconds: number, holder: string): Promise<Lease> {
    if (this.underWay.has(name)) throw droppedWhileResolving(name);
    const now = this.now();
    const lease: Lease = { id: randomUUID(), name, grantedAtMs: now, expiresAtMs: now + Math.min(seconds, this.maxSeconds) * 1000, holder };
    this.remember(lease);
    try {
      await this.store(lease);
    } catch (err) {
      this.forget(lease);
      throw err;
    }
    if (this.byId.get(lease.id) !== lease) {
      // a forced removal ended it while it was written, maybe before the write landed
      await this.records.del(lease.id);
      throw droppedWhileResolving(name);
    }
    return lease;
  }

  /**
   * A number that changes whenever a removal of any install begins or ends:
   * a grant that saw the same mark before it looked at the install and after
   * it was granted knows no removal came in between.
   */
  removalMark(): number {
    return this.removals;
  }

  /**
   * Runs `remove`, which takes the model's install away, as one removal
   * decided against the leases in the same step as it begins: a lease granted
   * before refuses it (or is ended by it), and a grant that comes while it
   * runs loses.
   */
  async removing<T>(name: string, admission: RemovalAdmission, remove: () => Promise<T>): Promise<T> {
    if ("refuse" in admission) this.refuseWhileLeased(name, admission.refuse.operation, admission.refuse.howToForce);
    this.underWay.set(name, (this.underWay.get(name) ?? 0) + 1);
    this.removals += 1;
    try {
      if ("endLeases" in admission) await this.endAll(name);
      return await remove();
    } finally {
      const left = this.underWay.get(name)! - 1;
      if (left === 0) this.underWay.delete(name);
      else this.underWay.set(name, left);
      this.removals += 1;
    }
  }

  /**
   * Stores a lease, together with the others granted meanwhile: one LevelDB
   * batch at a time, and the leases granted while it is written go in the
   * next one, together (a group commit: under many concurrent ResolveModel
   * calls, a batch's own cost is shared by more leases). Every lease is
   * stored before its grant returns.
   */
  private store(lease: Lease): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending.push({ lease, resolve, reject });
      if (!this.storing) this.storeBatch();
    });
  }

  private storeBatch(): void {
    this.storing = true;
    // the leases granted in this turn of the event loop join the batch
    setImmediate(() => {
      const batch = this.pending;
      this.pending = [];
      // a write that throws at once fails its batch like one that rejects, and the next batch still runs
      Promise.resolve()
        .then(() => this.records.batch(batch.map((p) => ({ type: "put" as const, key: p.lease.id, value: p.lease }))))
        .then(
          () => batch.forEach((p) => p.resolve()),
          (err: unknown) => batch.forEach((p) => p.reject(err)),
        )
        .finally(() => {
          this.storing = false;
          if (this.pending.length > 0) this.storeBatch();
        });
    });
  }

  /** Ends a live lease; false when `id` names no lease, or one that already expired. */
  async release(id: string): Promise<boolean> {
    const lease = this.byId.get(id);
    if (!lease) return false;
    // stored first: a lease whose deletion failed still holds its install, here as after a restart
    await this.records.del(id);
    this.forget(lease);
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

  /** How many leases are held in memory, expired ones not yet swept included. */
  get held(): number {
    return this.byId.size;
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

  /** Ends every lease of `name`, expired ones included; returns how many were live. */
  async endAll(name: string): Promise<number> {
    const now = this.now();
    const ended = [...(this.byName.get(name)?.values() ?? [])];
    // stored first: when the deletion fails the leases still hold, here as after a restart
    if (ended.length > 0) await this.records.batch(ended.map((l) => ({ type: "del" as const, key: l.id })));
    for (const lease of ended) this.forget(lease);
    return ended.filter((l) => l.expiresAtMs > now).length;
  }

  /** Deletes every expired lease, from memory and from LevelDB; returns how many. */
  async sweep(): Promise<number> {
    const now = this.now();
    const expired = [...this.byId.values()].filter((l) => l.expiresAtMs <= now);
    if (expired.length === 0) return 0;
    for (const lease of expired) this.forget(lease);
    await this.records.batch(expired.map((l) => ({ type: "del" as const, key: l.id })));
    return expired.length;
  }

  /**
   * Sweeps every `intervalMs` until close, so the leases of models nobody
   * resolves again do not stay until a restart. The timer never keeps the
   * process alive; a sweep that fails is reported and tried again next time.
   */
  startSweeping(intervalMs: number, report: { swept(count: number): void; failed(err: unknown): void }): void {
    this.sweeper ??= setInterval(() => {
      this.sweeping ??= this.sweep()
        .then(
          (count) => report.swept(count),
          (err: unknown) => report.failed(err),
        )
        .finally(() => (this.sweeping = undefined));
    }, intervalMs).unref();
  }

  /** Stops sweeping and waits for a sweep under way, before the registry closes. */
  async close(): Promise<void> {
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    await this.sweeping;
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
