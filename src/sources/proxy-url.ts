// A --proxy URL: checked at startup, and shown in logs with its credentials
// replaced, since a proxy URL may carry a user and password.
import { ModelCacheError } from "../errors.js";

export function checkProxyUrl(proxy: string): string {
  let url: URL;
  try {
    url = new URL(proxy);
  } catch {
    // the value may hold credentials: it is not quoted back
    throw new ModelCacheError("invalid_argument", "--proxy is not a URL; give one such as http://proxy.internal:3128 (credentials as http://user:password@host:port)");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ModelCacheError("invalid_argument", `--proxy must be an http(s) URL such as http://proxy.internal:3128 (got ${url.protocol})`);
  }
  return proxy;
}

/** The proxy as it may appear in logs and messages: its credentials, if any, replaced. */
export function redactProxy(proxy: string): string {
  try {
    const url = new URL(proxy);
    if (url.username !== "" || url.password !== "") {
      url.username = "***";
      url.password = "";
    }
    return url.href;
  } catch {
    return "(not a URL)";
  }
}
