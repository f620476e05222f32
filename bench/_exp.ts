import { execFileSync } from "node:child_process";
import { writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FIXTURE_DIR } from "../test/support/test-server.js";
import { pullAll, register, startBenchServer } from "./harness.js";

function frame(msg: Buffer): Buffer { const h = Buffer.alloc(5); h.writeUInt32BE(msg.length, 1); return Buffer.concat([h, msg]); }
const work = mkdtempSync(join(tmpdir(), "exp-"));
const server = await startBenchServer(work);
const client = server.client();
await register(client, "bench");
await pullAll(client, "bench", FIXTURE_DIR);
await new Promise((r) => setTimeout(r, 1100));
const name = Buffer.from("bench");
const bodies: Record<string, [string, Buffer]> = {
  health: ["/grpc.health.v1.Health/Check", frame(Buffer.alloc(0))],
  inspect: ["/modelcache.v1.ModelCacheService/InspectCache", frame(Buffer.concat([Buffer.from([0x0a, name.length]), name]))],
  get: ["/modelcache.v1.ModelCacheService/GetModel", frame(Buffer.concat([Buffer.from([0x0a, name.length]), name]))],
  resolve: ["/modelcache.v1.ModelCacheService/ResolveModel", frame(Buffer.concat([Buffer.from([0x0a, name.length]), name, Buffer.from([0x10, 2])]))],
  resolveLease: ["/modelcache.v1.ModelCacheService/ResolveModel", frame(Buffer.concat([Buffer.from([0x0a, name.length]), name, Buffer.from([0x10, 2, 0x18, 60])]))],
};
const which = (process.argv[2] ?? "health,inspect,health,inspect").split(",");
for (const w of which) {
  const [path, body] = bodies[w]!;
  const f = join(work, w + ".bin"); writeFileSync(f, body);
  const before = await server.cpuSeconds();
  const out = execFileSync("h2load", ["-D", "3", "-c", "16", "-m", "1", "-t", "1", "-d", f, "-H", "content-type: application/grpc", "-H", "te: trailers", `http://${server.address}${path}`], { encoding: "utf8" });
  const after = await server.cpuSeconds();
  const m = /finished in ([\d.]+)s, ([\d.]+) req\/s/.exec(out);
  const done = Number(/requests: \d+ total, \d+ started, (\d+) done/.exec(out)?.[1]);
  const status = /status codes: (.*)/.exec(out)?.[1];
  console.log(w, m?.[2], "req/s", "server cpu us/call", (((after.process - before.process) / done) * 1e6).toFixed(0), "main", (((after.main - before.main) / done) * 1e6).toFixed(0), status);
}
await server.stop();
