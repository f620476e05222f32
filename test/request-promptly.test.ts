// A request waiting for a connection (every connection of its agent busy)
// ends as soon as its signal aborts: undici alone ends it only once a
// connection frees, so a cancelled pull waited for other pulls' transfers.
import { type Server, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { expect } from "chai";
import { Agent } from "undici";
import { requestPromptly } from "../src/sources/request-promptly.js";

describe("a request waiting for a connection", () => {
  let server: Server;
  let release: () => void;
  let agent: Agent;
  let url: string;
  beforeEach(async () => {
    const held = new Promise<void>((resolve) => (release = resolve));
    server = createServer((_req, res) => void held.then(() => res.end("late")));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    // one connection: the first request holds it
    agent = new Agent({ connections: 1 });
  });
  afterEach(async () => {
    release();
    await agent.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it("ends with its signal's reason as soon as the signal aborts, while the connection is still held", async () => {
    const first = requestPromptly(url, { dispatcher: agent, signal: new AbortController().signal });
    const cancel = new AbortController();
    const queued = requestPromptly(url, { dispatcher: agent, signal: cancel.signal });
    let firstDone = false;
    void first.then(() => (firstDone = true));
    const reason = new Error("the pull was cancelled");
    cancel.abort(reason);
    const outcome = await queued.then(
      () => "answered",
      (err: unknown) => err,
    );
    expect(outcome).to.equal(reason);
    expect(firstDone, "the connection is still held").to.equal(false);
    release();
    const response = await first;
    expect(await response.body.text()).to.equal("late");
  });

  it("answers as undici does when its signal never aborts", async () => {
    release();
    const response = await requestPromptly(url, { dispatcher: agent, signal: new AbortController().signal });
    expect([response.statusCode, await response.body.text()]).to.deep.equal([200, "late"]);
  });
});
