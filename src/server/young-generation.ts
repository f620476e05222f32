// Keeps V8's young generation at its initial size while the server starts.
// V8 grows it (up to 16 MB per half) while the server's modules load, then
// keeps it for the life of the process: that was a fifth of the server's
// memory at rest. Once the server is up, the young generation may grow again
// as load asks for it (held small under load, the calls per second of
// InspectCache fell by some 5 to 10%). The flag is one V8 reads each time it
// would grow the space, so setting it at run time works, unlike
// --max-semi-space-size, which V8 reads only when it makes the heap.
import { setFlagsFromString } from "node:v8";

/** V8's own default */
const GROWTH_FACTOR = 2;

export function holdYoungGenerationWhileStarting(): void {
  setFlagsFromString("--semi-space-growth-factor=1");
}

/** The server is up: the young generation grows again as V8 sees fit. */
export function releaseYoungGeneration(): void {
  setFlagsFromString(`--semi-space-growth-factor=${GROWTH_FACTOR}`);
}
