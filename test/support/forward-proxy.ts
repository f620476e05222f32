// A real forward proxy on loopback, as curl and a corporate proxy speak it:
// absolute-form requests ("GET http://host/path") for plain http, CONNECT
// tunnels for https. It records which hosts (and, in absolute form, which
// paths and whether they carried Authorization) went through it and any
// Proxy-Authorization it was sent.
import { type Server, createServer, request } from "node:http";
import { type AddressInfo, type Socket, connect } from "node:net";

export interface ProxiedRequest {
  kind: "absolute" | "connect";
  /** host:port */
  host: string;
  proxyAuthorization?: string;
  /** absolute form: the request's path and query, and whether it carried Authorization for the target */
  path?: string;
  authorization?: boolean;
}

export class ForwardProxy {
  readonly requests: ProxiedRequest[] = [];
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(): Promise<ForwardProxy> {
    let self: ForwardProxy | undefined;
    const server = createServer((req, res) => {
      const target = new URL(req.url ?? "");
      self!.requests.push({ kind: "absolute", host: target.host, proxyAuthorization: req.headers["proxy-authorization"], path: `${target.pathname}${target.search}`, authorization: req.headers.authorization !== undefined });
      const { "proxy-authorization": _auth, "proxy-connection": _conn, ...headers } = req.headers;
      const upstream = request({ host: target.hostname, port: target.port, method: req.method, path: `${target.pathname}${target.search}`, headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      upstream.on("error", () => res.destroy());
      req.pipe(upstream);
    });
    server.on("connect", (req, client: Socket, head: Buffer) => {
      self!.requests.push({ kind: "connect", host: req.url ?? "", proxyAuthorization: req.headers["proxy-authorization"] });
      const [host, port] = (req.url ?? "").split(":");
      const upstream = connect(Number(port), host!, () => {
        client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
        upstream.write(head);
        upstream.pipe(client).pipe(upstream);
      });
      for (const socket of [client, upstream]) {
        self!.sockets.add(socket);
        socket.on("error", () => undefined).on("close", () => self!.sockets.delete(socket));
      }
      upstream.on("error", () => client.destroy());
      client.on("error", () => upstream.destroy());
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    self = new ForwardProxy(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    return self;
  }

  /** The hosts that went through, deduplicated. */
  hosts(): string[] {
    return [...new Set(this.requests.map((r) => r.host))];
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
