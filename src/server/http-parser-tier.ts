// Keeps the HTTP client's parser on V8's baseline WebAssembly compiler.
// undici parses HTTP/1.1 in WebAssembly (llhttp); once the parser is hot, V8
// recompiles it with its optimizing compiler on a background thread, and that
// one compile of the parser's large state machine took some 30 MB for a
// moment, during the first hub pull: a fifth of the server's peak memory. The
// baseline code is fast enough here: a download's body passes the parser in
// a few steps per socket read. The flags are read when a module is compiled,
// so setting them before the first request works; they touch nothing but
// WebAssembly: the parser, and Node's scanner of CommonJS modules imported
// from ES modules, which runs briefly while modules load.
import { setFlagsFromString } from "node:v8";

export function keepHttpParserOnBaselineCompiler(): void {
  setFlagsFromString("--no-wasm-dynamic-tiering");
  setFlagsFromString("--no-wasm-tier-up");
}
