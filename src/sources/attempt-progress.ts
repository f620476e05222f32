// A file's progress over several attempts (peers, then the source; a forced
// pull's comparison, then a download): each attempt counts its bytes from
// zero, and the pull hears only what passes the most any attempt told, so
// every byte of the file is counted once.

/** Makes the byte counter of each next attempt; all of them tell `onBytes`. */
export function attemptProgress(onBytes: (bytes: number) => void): () => (bytes: number) => void {
  let told = 0;
  return () => {
    let done = 0;
    return (bytes: number) => {
      done += bytes;
      if (done > told) {
        onBytes(done - told);
        told = done;
      }
    };
  };
}
