// A forced pull's check of stored content it may keep: the stored copy is
// hashed again (condemned when it fails, as verifyContent does) while the
// source's bytes are fetched and compared with it. When both hold (intact,
// and every byte what the source serves) the stored copy is linked and
// nothing is written: the download proved the same as writing it again would
// have. Called holding the blob's lock.
import { linkContent } from "./link-content.js";
import { type ContentStore, statBlob } from "./content-store.js";
import { type Hasher, verifyContent } from "./verify-content.js";

/** Fetches the content and compares it with the stored copy at `path`; whether every byte matched. Throws only when `signal` is aborted. */
export type CompareWithSource = (path: string, signal: AbortSignal) => Promise<boolean>;

/**
 * `linked`: the stored copy is intact, matched the source byte for byte, and
 * is linked at `target`. Otherwise it was hashed all the same (kept when
 * intact, condemned when not), so the caller need not hash it again.
 * Undefined when no comparison was made: the store holds no file of this
 * content at `sizeBytes`.
 */
export async function matchContent(store: ContentStore, sha256: string, sizeBytes: number, hasher: Hasher, signal: AbortSignal, target: string, compare: CompareWithSource): Promise<{ linked: boolean } | undefined> {
  const path = store.blobPath(sha256);
  const found = await statBlob(path);
  if (!found?.isFile() || Number(found.size) !== sizeBytes) return undefined;
  // a stored copy found rotten ends the comparison: the file is downloaded whatever it holds
  const rotten = new AbortController();
  const checking = verifyContent(store, sha256, hasher, signal, true).then(
    (checked) => {
      if (checked === undefined) rotten.abort();
      return checked;
    },
    (err: unknown) => {
      rotten.abort(err);
      throw err;
    },
  );
  // a failure is told once the comparison has settled (below), and never left unhandled meanwhile
  checking.catch(() => undefined);
  let same: boolean;
  try {
    same = await compare(path, AbortSignal.any([signal, rotten.signal]));
  } catch (err) {
    // the hashing still reads the blob: it settles before the lock is let go, and tells its own failure
    const checked = await checking;
    if (signal.aborted) throw err;
    // ended by the hashing's verdict alone
    if (checked === undefined) return { linked: false };
    throw err;
  }
  const checked = await checking;
  // linking fails when the blob changed since the hash began (its signature): the caller downloads it then
  return { linked: same && checked !== undefined && (await linkContent(store, sha256, target, checked)) };
}
