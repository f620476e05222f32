// A reverse proxy of the test's own between the server and a registry: it
// records every request (method, path, Range, whether it carried
// Authorization) and lets a test hold a response after some bytes until it
// says go, flip a byte of a response in transit, or cut it after some bytes.
import { type IncomingMessage, type Server, createServer, request } from "node:http";
import type { AddressInfo, Socket } from "node:net";

export interface Fault {
  /** after this many body bytes, wait for `until` (calling `reached` first) */
  hold?: { afterBytes: number; reached: () => void; until: Promise<void> };
  /** flip every bit of the body byte at this offset */
  flipByteAt?: number;
  /** end the connection after this many body bytes */
  dropAfter?: number;
}

export interface ProxiedCall {
  method: string;
  url: string;
  range?: string;
  authorization: boolean;
  /** body bytes sent back */
  sent: number;
}

export class OciFaultProxy {
  readonly calls: ProxiedCall[] = [];
  private readonly sockets = new Set<Socket>();
  /** decides the fault of each request; none by default */
  fault: (req: IncomingMessage) => Fault | undefined = () => undefined;

  private constructor(
    private readonly server: Server,
    readonly address: string,
  ) {}

  static async start(upstream: string): Promise<OciFaultProxy> {
    const [host, port] = upstream.split(":");
    let self: OciFaultProxy | undefined;
    const server = createServer((req, res) => {
      const call: ProxiedCall = { method: req.method ?? "GET", url: req.url ?? "", range: req.headers.range, authorization: req.headers.authorization !== undefined, sent: 0 };
      self!.calls.push(call);
      const fault = self!.fault(req);
      const { host: _host, ...headers } = req.headers;
      const forward = request({ host, port: Number(port), method: req.method, path: req.url, headers }, async (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        try {
          for await (const piece of answer) {
            let chunk = Buffer.from(piece as Buffer);
            if (fault?.flipByteAt !== undefined && fault.flipByteAt >= call.sent && fault.flipByteAt < call.sent + chunk.length) {
              chunk[fault.flipByteAt - call.sent] ^= 0xff;
            }
            if (fault?.hold && call.sent <= fault.hold.afterBytes && call.sent + chunk.length > fault.hold.afterBytes) {
              const cut = fault.hold.afterBytes - call.sent;
              await write(res, chunk.subarray(0, cut));
              call.sent += cut;
              fault.hold.reached();
              await fault.hold.until;
              chunk = chunk.subarray(cut);
            }
            if (fault?.dropAfter !== undefined && call.sent + chunk.length >= fault.dropAfter) {
              await write(res, chunk.subarray(0, fault.dropAfter - call.sent));
              call.sent = fault.dropAfter;
              res.destroy();
              answer.destroy();
              return;
            }
            await write(res, chunk);
            call.sent += chunk.length;
          }
          res.end();
        } catch {
          // the server went away mid-response (a cancelled pull, a killed server): nothing to forward to
          res.destroy();
        }
      });
      forward.on("error", () => res.destroy());
      req.pipe(forward);
    });
    server.on("connection", (socket: Socket) => {
      self!.sockets.add(socket);
      socket.on("close", () => self!.sockets.delete(socket));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    self = new OciFaultProxy(server, `127.0.0.1:${(server.address() as AddressInfo).port}`);
    return self;
  }

  /** The GETs of a blob that went through. */
  blobGets(digest: string): ProxiedCall[] {
    return this.calls.filter((c) => c.method === "GET" && c.url.includes(`/blobs/${digest}`));
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

function write(res: NodeJS.WritableStream, chunk: Buffer): Promise<void> {
  return new Promise((resolve, reject) => res.write(chunk, (err) => (err ? reject(err) : resolve())));
}

/** A hold a test releases: `reached` resolves once the proxy is holding. */
export function holdPoint(afterBytes: number): { hold: NonNullable<Fault["hold"]>; reached: Promise<void>; release: () => void } {
  let reached!: () => void;
  let release!: () => void;
  const reachedP = new Promise<void>((resolve) => (reached = resolve));
  const until = new Promise<void>((resolve) => (release = resolve));
  return { hold: { afterBytes, reached, until }, reached: reachedP, release };
}
