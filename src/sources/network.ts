// How hub and object-store traffic leaves the machine: through --proxy when
// given, else as HTTPS_PROXY / HTTP_PROXY / NO_PROXY say (either case, as
// curl and huggingface_hub read them), so that a corporate proxy or a
// peer-to-peer distribution proxy (such as Dragonfly's dfdaemon) can sit
// between the nodes and the hub or bucket. Plain-http targets go to the
// proxy in absolute form, which a caching proxy can serve from its cache;
// https targets go through a CONNECT tunnel.
import { type Dispatcher, EnvHttpProxyAgent, ProxyAgent } from "undici";
import { checkProxyUrl } from "./proxy-url.js";

const AGENT = { connections: 16, keepAliveTimeout: 10_000 } as const;

export function networkDispatcher(proxy: string | undefined): Dispatcher {
  if (proxy !== undefined) return new ProxyAgent({ ...AGENT, uri: checkProxyUrl(proxy), proxyTunnel: false });
  return new EnvHttpProxyAgent({ ...AGENT, proxyTunnel: false } as ConstructorParameters<typeof EnvHttpProxyAgent>[0]);
}
