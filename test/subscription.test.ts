import { expect } from "chai";
import type { PullEvent } from "../src/pull/pull-event.js";
import { Subscription } from "../src/pull/subscription.js";

const progress = (path: string, bytesDone: number): PullEvent => ({ type: "file_progress", path, bytesDone, sizeBytes: 1000, totalBytesDone: bytesDone, totalBytes: 2000 });

async function drain(subscription: Subscription): Promise<PullEvent[]> {
  const events: PullEvent[] = [];
  for await (const event of subscription.events(new AbortController().signal)) events.push(event);
  return events;
}

describe("a pull subscription (one client's queue)", () => {
  it("keeps only the latest unread progress per file, in place, whatever the number of updates", async () => {
    const subscription = new Subscription();
    subscription.push({ type: "file_started", path: "a", index: 0, sizeBytes: 1000 });
    subscription.push({ type: "file_started", path: "b", index: 1, sizeBytes: 1000 });
    for (let i = 1; i <= 10_000; i++) {
      subscription.push(progress("a", i % 1000));
      subscription.push(progress("b", i % 1000));
    }
    expect(subscription.backlog).to.equal(4);
    subscription.push({ type: "file_completed", path: "a", sha256: "0".repeat(64), sizeBytes: 1000, reused: false });
    subscription.end();
    const events = await drain(subscription);
    expect(events.map((e) => `${e.type}:${"path" in e ? e.path : ""}`)).to.deep.equal([
      "file_started:a",
      "file_started:b",
      "file_progress:a",
      "file_progress:b",
      "file_completed:a",
    ]);
    expect(events[2]).to.deep.equal(progress("a", 10_000 % 1000));
  });

  it("never drops a lifecycle event", async () => {
    const subscription = new Subscription();
    for (let i = 0; i < 500; i++) subscription.push({ type: "file_started", path: `f${i}`, index: i, sizeBytes: 1 });
    subscription.end();
    expect(await drain(subscription)).to.have.length(500);
  });

  it("ends with the job's error after the queued events", async () => {
    const subscription = new Subscription();
    subscription.push({ type: "started", source: "dir:/x", fileCount: 1, totalBytes: 1, reusedBytes: 0, evictedModels: [] });
    subscription.end(new Error("boom"));
    const seen: PullEvent[] = [];
    let error: unknown;
    try {
      for await (const event of subscription.events(new AbortController().signal)) seen.push(event);
    } catch (err) {
      error = err;
    }
    expect(seen).to.have.length(1);
    expect((error as Error).message).to.equal("boom");
  });

  it("stops waiting when the client's signal aborts", async () => {
    const subscription = new Subscription();
    const controller = new AbortController();
    const reading = (async () => {
      for await (const _ of subscription.events(controller.signal));
    })();
    controller.abort(new Error("gone"));
    let error: unknown;
    await reading.catch((err: unknown) => (error = err));
    expect((error as Error).message).to.equal("gone");
  });
});
