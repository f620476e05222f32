// The S3 client's HTTP requests sent with undici through the server's
// network dispatcher, so that object-store traffic takes the same proxies
// (--proxy, HTTPS_PROXY / HTTP_PROXY / NO_PROXY) as the hub's. The SDK's own
// node:http handler knows no proxies.
import type { S3ClientConfig } from "@aws-sdk/client-s3";
import type { Dispatcher } from "undici";
import { requestPromptly } from "../request-promptly.js";

interface SdkRequest {
  method: string;
  protocol: string;
  hostname: string;
  port?: number;
  path: string;
  query: Record<string, string | (string | null)[] | null>;
  headers: Record<string, string>;
  body?: unknown;
}

export function undiciRequestHandler(dispatcher: Dispatcher): NonNullable<S3ClientConfig["requestHandler"]> {
  return {
    metadata: { handlerProtocol: "http/1.1" },
    async handle(sdkRequest: SdkRequest, options?: { abortSignal?: AbortSignal }) {
      const url = `${sdkRequest.protocol}//${sdkRequest.hostname}${sdkRequest.port ? `:${sdkRequest.port}` : ""}${sdkRequest.path}${queryString(sdkRequest.query)}`;
      // undici sets Host from the URL itself and refuses one given as a header
      const { host: _host, ...headers } = sdkRequest.headers;
      const response = await requestPromptly(url, {
        method: sdkRequest.method as Dispatcher.HttpMethod,
        headers,
        body: sdkRequest.body as Dispatcher.DispatchOptions["body"],
        signal: options?.abortSignal,
        dispatcher,
      });
      const flat: Record<string, string> = {};
      for (const [name, value] of Object.entries(response.headers)) if (value !== undefined) flat[name] = Array.isArray(value) ? value.join(", ") : value;
      return { response: { statusCode: response.statusCode, reason: undefined, headers: flat, body: response.body } };
    },
    updateHttpClientConfig() {},
    httpHandlerConfigs: () => ({}),
    destroy() {},
  } as unknown as NonNullable<S3ClientConfig["requestHandler"]>;
}

/** RFC 3986 encoding, as the SDK signs it. */
function encode(value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function queryString(query: SdkRequest["query"]): string {
  const parts: string[] = [];
  for (const key of Object.keys(query).sort()) {
    const value = query[key];
    if (value === null || value === undefined) parts.push(encode(key));
    else if (Array.isArray(value)) for (const item of value) parts.push(item === null ? encode(key) : `${encode(key)}=${encode(item)}`);
    else parts.push(`${encode(key)}=${encode(value)}`);
  }
  return parts.length > 0 ? `?${parts.join("&")}` : "";
}
