// Whether a peer's address is this server's own hub endpoint, known before
// any request: the endpoint's port on the host it is bound to, where an
// endpoint bound to every address (0.0.0.0, ::) is reached through any
// address of this machine (a loopback address, `localhost`, an address of one
// of its interfaces), and one bound to a single address only through that
// address (`localhost` standing for a loopback one): another server on this
// machine may listen on the same port at another address. An address that
// reaches this server in a way not seen here (a NAT, a Service IP) is found
// by the instance id its answer carries instead (peer-list.ts).
import { networkInterfaces } from "node:os";
import { isIP } from "node:net";

/** The hub endpoint's bound host:port (or unix:PATH, which no URL reaches). */
export type OwnEndpoint = { host: string; port: number } | undefined;

/** The endpoint's host and port from the address the hub server reports. */
export function ownEndpointOf(hubAddress: string | undefined): OwnEndpoint {
  if (hubAddress === undefined || hubAddress.startsWith("unix:")) return undefined;
  const split = hubAddress.lastIndexOf(":");
  return { host: unbracket(hubAddress.slice(0, split)), port: Number(hubAddress.slice(split + 1)) };
}

/** Whether the base URL `peer` names `own`. */
export function isOwnEndpoint(peer: string, own: OwnEndpoint): boolean {
  if (!own) return false;
  const url = new URL(peer);
  const port = url.port !== "" ? Number(url.port) : url.protocol === "https:" ? 443 : 80;
  if (port !== own.port) return false;
  const host = normalized(unbracket(url.hostname));
  const bound = normalized(own.host);
  if (host === bound) return true;
  // bound to every address: any of this machine's reaches it (0.0.0.0 only the IPv4 ones)
  if (bound === "0.0.0.0") return isIP(host) !== 6 && (host === "localhost" || isThisMachine(host));
  if (bound === "::") return host === "localhost" || isThisMachine(host);
  // bound to one address: only that one, localhost standing for the loopback address
  if (host === "localhost") return isLocalhost(bound);
  if (bound === "localhost") return isLocalhost(host);
  return false;
}

function isThisMachine(host: string): boolean {
  if (isIP(host) === 0) return false;
  if (/^127\./.test(host) || host === "::1" || host === "0.0.0.0" || host === "::") return true;
  return Object.values(networkInterfaces()).some((addresses) => (addresses ?? []).some((a) => normalized(a.address) === host));
}

/** What `localhost` resolves to. */
function isLocalhost(host: string): boolean {
  return host === "127.0.0.1" || host === "::1";
}

/** Lower case, an IPv4-mapped IPv6 address as its IPv4 address. */
function normalized(host: string): string {
  const lower = host.toLowerCase();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
  return mapped ? mapped[1]! : lower;
}

function unbracket(host: string): string {
  return host.replace(/^\[(.*)\]$/, "$1");
}
