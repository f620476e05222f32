// fanout: many clients attached to one pull, half of them reading slowly;
// the server's peak RSS, beside the same pull with a single client.
import { join } from "node:path";
import { MiB, type Result, makeFixture, pullAll, register, seconds, startBenchServer } from "./harness.js";

export interface FanoutOptions {
  workDir: string;
  totalMiB: number;
  clients: number;
}

export async function benchFanout(options: FanoutOptions): Promise<Result> {
  const source = join(options.workDir, "fanout-source");
  await makeFixture(source, 2, Math.floor((options.totalMiB * MiB) / 2));
  const measure = async (clients: number) => {
    // progress every millisecond, so that slow readers have plenty to fall behind on
    const server = await startBenchServer(options.workDir, []);
    try {
      const first = server.client();
      await register(first, "bench");
      const started = performance.now();
      const pulls = [pullAll(first, "bench", source)];
      for (let i = 1; i < clients; i++) {
        const slow = i % 2 === 1;
        pulls.push(pullAll(server.client(), "bench", source, slow ? (_event, pause) => pause(50) : undefined));
      }
      await Promise.all(pulls);
      return { seconds: seconds(started), rss: await server.peakRssBytes() };
    } finally {
      await server.stop();
    }
  };
  const single = await measure(1);
  const many = await measure(options.clients);
  return {
    name: "fanout",
    subject_seconds: many.seconds,
    baseline_seconds: single.seconds,
    ratio: many.seconds / single.seconds,
    peak_rss_bytes: many.rss,
    baseline_peak_rss_bytes: single.rss,
    clients: options.clients,
    table: [
      { what: `${options.clients} clients (half pausing 50 ms per event)`, seconds: many.seconds.toFixed(3), "peak RSS MB": (many.rss / 1e6).toFixed(0) },
      { what: "1 client", seconds: single.seconds.toFixed(3), "peak RSS MB": (single.rss / 1e6).toFixed(0) },
    ],
  };
}
