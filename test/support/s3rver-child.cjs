// s3rver in a process of its own, started with --openssl-legacy-provider:
// its ListObjectsV2 continuation tokens use DES, which OpenSSL 3 keeps only
// in the legacy provider, and the test process itself must not load that.
// Usage: node --openssl-legacy-provider s3rver-child.cjs DIR BUCKET...; prints the port.
const S3rver = require("s3rver");

const [dir, ...buckets] = process.argv.slice(2);
const server = new S3rver({ port: 0, address: "127.0.0.1", directory: dir, silent: true, configureBuckets: buckets.map((name) => ({ name })) });
server.run().then(({ port }) => process.stdout.write(`${port}\n`));
process.on("SIGTERM", () => server.close().then(() => process.exit(0)));
