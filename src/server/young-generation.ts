// Keeps V8's young generation at its initial size in the server. V8 grows it
// (up to 16 MB per half) while loading modules at start, then keeps it for
// the life of the process: that was a fifth of the server's memory at rest.
// Small, it is also collected more often, which frees the buffers a download
// has finished with (each socket read allocates one) sooner. The flag is one
// V8 reads each time it would grow the space, so setting it at run time
// works, unlike --max-semi-space-size, which is read only when the heap is made.
import { setFlagsFromString } from "node:v8";

export function keepYoungGenerationSmall(): void {
  setFlagsFromString("--semi-space-growth-factor=1");
}
