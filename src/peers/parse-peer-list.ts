// --peers: a comma-separated list of other servers' hub endpoints, each a
// base URL (http(s)://host:port[/path]) or `dns:NAME:PORT` (every A/AAAA
// record of NAME is one, as a Kubernetes headless Service gives them).
import { ModelCacheError, quote } from "../errors.js";

export type PeerEntry = { kind: "url"; url: string } | { kind: "dns"; name: string; port: number };

const FORM = "give base URLs of other servers' hub endpoints (http://10.0.0.7:50052) or dns:NAME:PORT (a headless Service), separated by commas";

/** The entries of `list`; invalid_argument naming --peers and the entry when one is malformed. */
export function parsePeerList(list: string | readonly string[]): PeerEntry[] {
  const items = (typeof list === "string" ? list.split(",") : list.flatMap((item) => item.split(","))).map((item) => item.trim()).filter((item) => item !== "");
  return items.map(parseEntry);
}

function parseEntry(item: string): PeerEntry {
  if (item.startsWith("dns:")) {
    const match = /^dns:([A-Za-z0-9._-]+):([0-9]{1,5})$/.exec(item);
    const port = Number(match?.[2]);
    if (!match || port < 1 || port > 65535) throw new ModelCacheError("invalid_argument", `--peers entry ${quote(item.slice(0, 120))} is not dns:NAME:PORT (such as dns:modelcache-peers.ai.svc.cluster.local:50052); ${FORM}`);
    return { kind: "dns", name: match[1]!, port };
  }
  let url: URL;
  try {
    url = new URL(item);
  } catch {
    throw new ModelCacheError("invalid_argument", `--peers entry ${quote(item.slice(0, 120))} is neither a URL nor dns:NAME:PORT; ${FORM}`);
  }
  if ((url.protocol !== "http:" && url.protocol !== "https:") || url.username !== "" || url.password !== "" || url.search !== "" || url.hash !== "") {
    throw new ModelCacheError("invalid_argument", `--peers entry ${quote(redacted(url, item).slice(0, 120))} must be a plain http(s) base URL without credentials, query or fragment (the token goes in --peer-token-file); ${FORM}`);
  }
  return { kind: "url", url: baseUrl(url) };
}

/** The URL without a trailing slash: the one spelling an address is ranked and compared by. */
export function baseUrl(url: URL): string {
  return url.href.replace(/\/+$/, "");
}

/** The entry as messages show it: credentials or a query given by mistake may hold a secret, and a message goes to the log. */
function redacted(url: URL, item: string): string {
  if (url.username === "" && url.password === "" && url.search === "") return item;
  const shown = new URL(url.href);
  if (shown.username !== "" || shown.password !== "") {
    shown.username = "***";
    shown.password = "";
  }
  if (shown.search !== "") shown.search = "?***";
  return shown.href;
}
