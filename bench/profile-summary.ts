// npx tsx bench/profile-summary.ts .bench/profiles/CPU.*.cpuprofile: where a
// server's CPU time went, from a profile `npm run bench -- NAME --cpu-prof`
// wrote: the functions with the most self time, and the total time under
// a few landmarks (sha256, socket reads, file writes, gRPC, garbage collection).
import { readFileSync } from "node:fs";

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

for (const file of process.argv.slice(2)) {
  const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const label = (n: Node) => `${n.callFrame.functionName || "(anonymous)"} ${n.callFrame.url.replace(/^.*\/(node_modules\/|src\/|dist\/)/, "$1")}:${n.callFrame.lineNumber + 1}`;
  const self = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const key = label(byId.get(id)!);
    self.set(key, (self.get(key) ?? 0) + us);
  }
  const total = [...selfUs.values()].reduce((a, b) => a + b, 0);
  const idle = [...selfUs].filter(([id]) => byId.get(id)!.callFrame.functionName === "(idle)").reduce((a, [, us]) => a + us, 0);
  console.log(`\n# ${file}\nwall ${(total / 1e6).toFixed(2)} s, idle ${(idle / 1e6).toFixed(2)} s, busy ${((total - idle) / 1e6).toFixed(2)} s (main thread)`);
  console.log("## self time, top 25");
  for (const [key, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(`${(us / 1e3).toFixed(0).padStart(7)} ms  ${key}`);
  // inclusive time under landmarks: a sample counts once for the first landmark on its stack
  const landmarks: [string, RegExp][] = [
    ["garbage collection", /^\(garbage collector\)$/],
    ["sha256 (Hash.update)", /^(update|_update)$|digest/],
    ["gRPC (grpc-js)", /@grpc\/grpc-js/],
    ["HTTP client (undici)", /undici/],
    ["file writes (writev/write)", /^(writev|write|writeAll|writevAll)$/],
    ["protobuf", /protobuf|bufbuild/],
    ["pino / logging", /pino/],
    ["level", /level|abstract-level/],
  ];
  const under = new Map<string, number>();
  for (const [id, us] of selfUs) {
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const n = byId.get(at)!;
      const hit = landmarks.find(([, re]) => re.test(n.callFrame.functionName) || re.test(n.callFrame.url));
      if (hit) {
        under.set(hit[0], (under.get(hit[0]) ?? 0) + us);
        break;
      }
    }
  }
  console.log("## inclusive, first landmark on the stack");
  for (const [name, us] of [...under].sort((a, b) => b[1] - a[1])) console.log(`${(us / 1e3).toFixed(0).padStart(7)} ms  ${name}`);
}
