#!/usr/bin/env node
// The container's health check: grpc.health.v1.Health/Check against the server
// (plaintext; health checks need no token). Exit 0 when SERVING, 1 otherwise.
// Usage: node health-check.mjs [host:port]   (default: the port of
// MODELCACHE_LISTEN on loopback, so a container given another --listen port by
// that variable is still checked where it listens; else 127.0.0.1:50051)
import { credentials, loadPackageDefinition } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { protoPath } from "grpc-health-check";

const listen = process.env.MODELCACHE_LISTEN;
const address = process.argv[2] ?? (listen ? `127.0.0.1:${listen.slice(listen.lastIndexOf(":") + 1)}` : "127.0.0.1:50051");
const { grpc } = loadPackageDefinition(loadSync(protoPath, { enums: String }));
const client = new grpc.health.v1.Health(address, credentials.createInsecure());
client.check({ service: "" }, { deadline: Date.now() + 3000 }, (err, res) => {
  client.close();
  if (err) {
    process.stderr.write(`unhealthy: ${err.details || err.message}\n`);
    process.exit(1);
  }
  process.stdout.write(`${res.status}\n`);
  process.exit(res.status === "SERVING" ? 0 : 1);
});
