// Leases: a service that uses a model's install holds one so the install is
// neither evicted nor dropped under it. Each lease is written to the leases'
// journal (lease-journal.ts), so leases survive a restart; a copy in memory
// answers the frequent questions ("is this model leased?") without a read. A lease ends when it expires,
// when it is released, when a forced DropCache ends every lease of the
// model, or when the model is unregistered. A lease is live only while its
// end lies in the future; a periodic sweep forgets the rest (the journal drops
// them at its next rewrite).
// A grant and a removal of the install (drop, eviction, unregistration) are
// ordered here: each decides against the other in one step, so one wins.
import { randomUUID } from "node:crypto";
import { ModelCacheError, quote } from "../errors.js";
import type { LevelSublevel } from "../registry/sublevel.js";
import type { Lease } from "./lease.js";
import type { LeaseJournal } from "./lease-journal.js";

export type { Lease } from "./lease.js";

/** --max-lease-seconds unless given: a day */
export const DEFAULT_MAX_LEASE_SECONDS = 86_400;

/** How often expired leases are forgotten. */
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
  /** leases granted in this turn of the event loop, written together in one append */
  private pending: { lease: Lease; resolve: () => void; reject: (err: unknown) => void }[] = [];
  /** removals of installs under way, by model */
  private readonly underWay = new Map<string, number>();
  /** bumped when any removal begins or ends: see removalMark */
  private removals = 0;
  private sweeper: NodeJS.Timeout | undefined;

  constructor(
    private readonly journal: LeaseJournal,
    /** the longest lease granted; longer requests are shortened to it */
    readonly maxSeconds: number,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Reads the journal, and the LevelDB records of leases an earlier version
   * kept in `earlier`, and starts the journal anew with the live leases:
   * not those that expired while the server was down, nor those of models no
   * longer registered (an unregistration a crash interrupted), so a name
   * registered again starts without leases. The earlier records are deleted
   * once the journal holds them; a crash before that reads both again.
   */
  async load(isRegistered: (name: string) => Promise<boolean>, earlier?: LevelSublevel<Lease>): Promise<{ loaded: number; skipped: number; moved: number }> {
    const { leases, skipped } = await this.journal.read();
    const found = new Map(leases.map((lease) => [lease.id, lease]));
    const moved: string[] = [];
    for await (const [id, lease] of earlier?.iterator() ?? []) {
      moved.push(id);
      found.set(id, lease);
    }
    const live: Lease[] = [];
    // asked once a model, however many leases it holds
    const registered = new Map<string, Promise<boolean>>();
    for (const lease of found.values()) {
      if (lease.expiresAtMs <= this.now()) continue;
      if (!registered.has(lease.name)) registered.set(lease.name, isRegistered(lease.name));
      if (await registered.get(lease.name)!) live.push(lease);
    }
    await this.journal.start(live, () => this.written());
    if (moved.length > 0) await earlier!.batch(moved.map((key) => ({ type: "del" as const, key })));
    for (const lease of live) this.remember(lease);
    return { loaded: live.length, skipped, moved: moved.length };
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
    // a forced removal ended it after its write (and wrote its end)
    if (this.byId.get(lease.id) !== lease) throw droppedWhileResolving(name);
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
   * Stores a lease, together with the others granted in the same turn of the
   * event loop: one append for them all once the turn ends (under many
   * concurrent ResolveModel calls, the write's cost is shared). Every lease
   * is stored before its grant returns.
   */
  private store(lease: Lease): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.pending.push({ lease, resolve, reject }) === 1) setImmediate(() => this.storeBatch());
    });
  }

  private storeBatch(): void {
    // a lease a forced removal ended while it waited is not written: its grant loses
    const ended = this.pending.filter((p) => this.byId.get(p.lease.id) !== p.lease);
    const batch = this.pending.filter((p) => this.byId.get(p.lease.id) === p.lease);
    this.pending = [];
    for (const p of ended) p.reject(droppedWhileResolving(p.lease.name));
    try {
      this.journal.put(batch.map((p) => p.lease));
    } catch (err) {
      for (const p of batch) p.reject(err);
      return;
    }
    for (const p of batch) p.resolve();
  }

  /** The leases whose grant is written, ended or not: those still waiting for their write are left out, as their write may fail. */
  private *written(): Iterable<Lease> {
    const waiting = new Set(this.pending.map((p) => p.lease));
    for (const lease of this.byId.values()) if (!waiting.has(lease)) yield lease;
  }

  /** Ends a live lease; false when `id` names no lease, or one that already expired. */
  async release(id: string): Promise<boolean> {
    const lease = this.byId.get(id);
    if (!lease) return false;
    // stored first: a lease whose ending failed to be written still holds its install, here as after a restart
    this.journal.remove([id]);
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
    // stored first: when the write fails the leases still hold, here as after a restart
    this.journal.remove(ended.map((l) => l.id));
    for (const lease of ended) this.forget(lease);
    return ended.filter((l) => l.expiresAtMs > now).length;
  }

  /**
   * Forgets every expired lease; returns how many. Nothing is written: an
   * expired lease is dead in the journal too, which drops it when it is
   * next rewritten (or read).
   */
  sweep(): number {
    const now = this.now();
    const expired = [...this.byId.values()].filter((l) => l.expiresAtMs <= now);
    for (const lease of expired) this.forget(lease);
    return expired.length;
  }

  /**
   * Sweeps every `intervalMs` until close, so the leases of models nobody
   * resolves again do not stay in memory until a restart. The timer never
   * keeps the process alive.
   */
  startSweeping(intervalMs: number, swept: (count: number) => void): void {
    this.sweeper ??= setInterval(() => swept(this.sweep()), intervalMs).unref();
  }

  /** Stops sweeping and closes the journal (after a rewrite under way). */
  async close(): Promise<void> {
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    await this.journal.close();
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
