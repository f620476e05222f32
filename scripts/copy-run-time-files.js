// The files the compiled code reads at run time, copied beside it so that
// dist/ runs on its own: the descriptor sets (reflection, --json output) and
// the copy and hashing workers, which are plain JavaScript and so are not emitted by tsc.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";

const root = join(import.meta.dirname, "..");
const files = ["generated/modelcache.binpb", "generated/health.binpb", "src/cache/copy-file-worker.cjs", "src/cache/hash-behind-client.cjs", "src/cache/hash-behind-worker.cjs"];
for (const file of files) {
  const target = join(root, "dist", file);
  mkdirSync(dirname(target), { recursive: true });
  copyFileSync(join(root, file), target);
}
