#!/usr/bin/env node
// The modelcache command: runs the compiled CLI (`npm run build` writes dist/).
let cli;
try {
  cli = await import("../dist/src/cli/main.js");
} catch (err) {
  if (err?.code === "ERR_MODULE_NOT_FOUND" && String(err.message).includes("dist/src/cli/main.js")) {
    process.stderr.write("error: modelcache is not built: run 'npm run build' (or 'npm install') in its directory\n");
    process.exit(1);
  }
  throw err;
}
await cli.program.parseAsync(process.argv);
