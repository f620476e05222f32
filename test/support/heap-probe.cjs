// Preloaded into a child server (node --require): answers each IPC message
// with V8's heap spaces, so a test can see how the server's heap is laid out.
"use strict";
const { getHeapSpaceStatistics } = require("node:v8");

process.on("message", () => {
  process.send?.(getHeapSpaceStatistics());
});
// the IPC channel must not keep a server from exiting when it is told to
process.channel?.unref();
