// Whether a peer's address is this server's own hub endpoint, known before
// any request: the endpoint's port on a host that is this machine (a
// loopback address, `localhost`, an address of one of its interfaces, or the
// host the endpoint is bound to). An address that reaches this server in a
// way not seen here (a NAT, a Service IP) is found by the instance id its
// answer carries instead (peer-list.ts).
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
  const host = unbracket(url.hostname).toLowerCase();
  return host === own.host.toLowerCase() || host === "localhost" || isThisMachine(host);
}

function isThisMachine(host: string): boolean {
  if (isIP(host) === 0) return false;
  if (/^127\./.test(host) || host === "::1" || host === "0.0.0.0" || host === "::") return true;
  const mapped = host.replace(/^::ffff:/i, "");
  return Object.values(networkInterfaces()).some((addresses) => (addresses ?? []).some((a) => a.address.toLowerCase() === mapped || a.address.toLowerCase() === host));
}

function unbracket(host: string): string {
  return host.replace(/^\[(.*)\]$/, "$1");
}
