// Load from h2load (nghttp2's HTTP/2 benchmarking tool, written in C): unary
// gRPC calls as raw HTTP/2 requests whose body is the length-prefixed message.
// It costs a few microseconds of CPU per call, where a grpc-js client in the
// benchmark's own process costs more than the server's handler, so the ratios
// it gives are the server's. Debian's nghttp2-client has it; H2LOAD names another.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { readFile, rm, writeFile } from "node:fs/promises";
import { connect } from "node:http2";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** The h2load binary, or undefined when there is none. */
export function h2loadBinary(): string | undefined {
  const path = process.env.H2LOAD ?? "/usr/bin/h2load";
  return existsSync(path) ? path : undefined;
}

/** A gRPC message as a unary call's HTTP/2 body: a byte saying uncompressed, its length (big-endian), the message. */
export function grpcBody(message: Uint8Array): Buffer {
  const body = Buffer.alloc(5 + message.length);
  body.writeUInt32BE(message.length, 1);
  body.set(message, 5);
  return body;
}

/**
 * Sends `body` to `path` once over node:http2 and fails unless the server
 * answered grpc-status 0: h2load only counts HTTP statuses, and a gRPC error
 * is an HTTP 200 too, so the request is proven good before it is measured.
 */
export async function checkGrpcCall(address: string, path: string, body: Buffer): Promise<void> {
  const session = connect(`http://${address}`);
  try {
    const status = await new Promise<string | undefined>((resolve, reject) => {
      const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });
      stream.on("trailers", (trailers) => resolve(String(trailers["grpc-status"] ?? "") || undefined));
      stream.on("response", (headers) => {
        // a trailers-only answer carries grpc-status in its headers
        if (headers["grpc-status"] !== undefined) resolve(String(headers["grpc-status"]));
      });
      stream.on("error", reject);
      stream.resume();
      stream.end(body);
    });
    if (status !== "0") throw new Error(`${path} answered grpc-status ${status ?? "(none)"} to the benchmark's request`);
  } finally {
    session.close();
  }
}

export interface H2loadTurn {
  calls: number;
  /** each call's latency in milliseconds */
  latencies: number[];
  /** CPU seconds h2load used */
  cpuSeconds: number;
}

/** `clients` connections, one call in flight on each, for `durationMs`. */
export async function h2loadTurn(binary: string, options: { address: string; path: string; bodyFile: string; clients: number; durationMs: number; logFile: string }): Promise<H2loadTurn> {
  const args = ["-D", `${Math.max(1, Math.round(options.durationMs))}ms`, "-c", String(options.clients), "-m", "1", "-t", "1", "-d", options.bodyFile, "-H", "content-type: application/grpc", "-H", "te: trailers", "--log-file", options.logFile, `http://${options.address}${options.path}`];
  // `times` prints the shell's CPU times, then its children's: h2load's
  const { stdout } = await run("/bin/sh", ["-c", `"$0" "$@" >/dev/null && times`, binary, ...args]);
  const children = stdout.trim().split("\n").at(-1)!.split(/\s+/).map(minutesAndSeconds);
  const log = await readFile(options.logFile, "utf8");
  await rm(options.logFile, { force: true });
  const latencies: number[] = [];
  let failed = 0;
  for (const line of log.split("\n")) {
    if (line === "") continue;
    const [, code, micros] = line.split("\t");
    if (code !== "200") failed += 1;
    else latencies.push(Number(micros) / 1000);
  }
  if (failed > 0) throw new Error(`${failed} of the calls h2load made to ${options.path} did not answer HTTP 200`);
  return { calls: latencies.length, latencies, cpuSeconds: children.reduce((sum, s) => sum + s, 0) };
}

function minutesAndSeconds(time: string): number {
  const match = /^(\d+)m([\d.]+)s$/.exec(time);
  return match ? Number(match[1]) * 60 + Number(match[2]) : 0;
}

/**
 * Writes the body h2load sends (-d) into `dir`, named by the method and the
 * body's digest: two loads of one method with different requests (ResolveModel
 * with and without a lease) each keep their own file.
 */
export async function bodyFile(dir: string, name: string, body: Buffer): Promise<string> {
  const path = join(dir, `${name}-${createHash("sha256").update(body).digest("hex").slice(0, 16)}.grpc`);
  await writeFile(path, body);
  return path;
}
