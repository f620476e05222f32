// `buf curl` against a server, resolving the schema by reflection only, as
// grpcurl would: the reflection client the tests hold the server to.
import { execFile } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const BUF = join(import.meta.dirname, "..", "..", "node_modules", ".bin", "buf");

/** The last argument is the path (/package.Service/Method, or "" with --list-*); the others are buf curl flags. */
export async function bufCurl(address: string, ...args: string[]): Promise<string> {
  const { stdout } = await run(BUF, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", ...args.slice(0, -1), `http://${address}${args.at(-1)}`], { cwd: tmpdir() });
  return stdout;
}
