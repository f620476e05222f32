// The peers a pull may ask, as base URLs: the --peers URLs as given, and the
// A/AAAA records of each dns:NAME:PORT entry, resolved at start and again
// every 30 s (a headless Service's pods come and go); a failed resolution
// keeps the addresses of the last one that worked. This server's own hub
// endpoint is never among them: recognised by its address (own-endpoint.ts)
// before any request, or by the instance id its answer carries.
import { lookup } from "node:dns/promises";
import { randomUUID } from "node:crypto";
import { isIP } from "node:net";
import type { Logger } from "pino";
import { type OwnEndpoint, isOwnEndpoint, ownEndpointOf } from "./own-endpoint.js";
import type { PeerEntry } from "./parse-peer-list.js";

export const DNS_REFRESH_MS = 30_000;

export class PeerList {
  /** sent by this server's hub endpoint on the blob route: an answer carrying it came from this server */
  readonly instanceId = randomUUID();
  private resolved = new Map<string, string[]>();
  private readonly self = new Set<string>();
  private own: OwnEndpoint;
  private first: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly entries: readonly PeerEntry[],
    private readonly logger: Logger,
    private readonly refreshMs = DNS_REFRESH_MS,
    /** every address of a name (A and AAAA records) */
    private readonly resolveName: (name: string) => Promise<{ address: string }[]> = (name) => lookup(name, { all: true }),
  ) {}

  /** Resolves the dns: entries now and every refreshMs until close(). */
  start(): void {
    this.first ??= this.refresh();
    if (this.entries.some((e) => e.kind === "dns") && !this.timer) {
      this.timer = setInterval(() => void this.refresh(), this.refreshMs);
      // the refresh must never keep a stopping process alive
      this.timer.unref();
    }
  }

  close(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Tells the list where this server's hub endpoint is bound (host:port or unix:PATH). */
  setOwnEndpoint(hubAddress: string | undefined): void {
    this.own = ownEndpointOf(hubAddress);
  }

  /** An answer from `peer` carried this server's instance id: it is never asked again. */
  markSelf(peer: string): void {
    if (!this.self.has(peer)) this.logger.info({ peer }, "a --peers address reaches this server itself: it is left out");
    this.self.add(peer);
  }

  /** The peers now, this server left out; waits for the first resolution. */
  async current(): Promise<string[]> {
    this.start();
    await this.first;
    const all = this.entries.flatMap((entry) => (entry.kind === "url" ? [entry.url] : (this.resolved.get(dnsKey(entry)) ?? [])));
    return [...new Set(all)].filter((peer) => !this.self.has(peer) && !isOwnEndpoint(peer, this.own));
  }

  /** Resolves every dns: entry once; an entry that fails keeps what it had. */
  async refresh(): Promise<void> {
    await Promise.all(
      this.entries.map(async (entry) => {
        if (entry.kind !== "dns") return;
        try {
          const records = await this.resolveName(entry.name);
          this.resolved.set(dnsKey(entry), records.map((r) => `http://${isIP(r.address) === 6 ? `[${r.address}]` : r.address}:${entry.port}`));
        } catch (err) {
          this.logger.warn({ peers: `dns:${entry.name}:${entry.port}`, error: (err as Error).message }, "could not resolve a --peers name; its last addresses stay");
        }
      }),
    );
  }
}

function dnsKey(entry: Extract<PeerEntry, { kind: "dns" }>): string {
  return `${entry.name}:${entry.port}`;
}
