// What --listen and --metrics-listen accept: host:port (an IPv6 host in
// brackets, port 0 picks a free one). Shared by the CLI, which checks it
// before anything starts, and the server, which checks it for every caller.
import { isIP } from "node:net";

export const LISTEN_ADDRESS_FORM = "host:port, such as 127.0.0.1:50051, [::1]:50051 or localhost:50051 (port 0 picks a free one)";

export function isHostAndPort(address: string): boolean {
  const match = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})$/.exec(address);
  return match !== null && Number(match[2]) <= 65535 && (!match[1]!.startsWith("[") || isIP(match[1]!.slice(1, -1)) === 6);
}
