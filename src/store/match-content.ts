// A forced pull's check of stored content it may keep: the stored copy is
// hashed again under the blob's lock (condemned when it fails, as
// verifyContent does) while the source's bytes are fetched and compared with
// it through a descriptor of its own. When both hold (intact, and every byte
// what the source serves) the stored copy is linked and nothing is written:
// the download proved the same as writing it again would have. The
// comparison holds no lock, so other pulls of the same content wait only for
// the hash, and when it fails the caller downloads the file while the hash
// goes on.
import { constants } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { errorCode, filesystemError } from "../errors.js";
import { type ContentStore, signatureOf } from "./content-store.js";
import { linkContent } from "./link-content.js";
import { type Hasher, verifyContent } from "./verify-content.js";

/** Fetches the content and compares it with the stored copy open at `stored`; whether every byte matched. Throws only when `signal` is aborted. */
export type CompareWithSource = (stored: FileHandle, signal: AbortSignal) => Promise<boolean>;

export type Matched =
  /** the stored copy is intact, matched the source byte for byte, and is linked at the target */
  | { linked: true }
  /**
   * not linked; `checked` settles once the stored copy is hashed (the
   * signature it vouches for, undefined when it was found rotten and
   * condemned, or gone), and rejects when the hash fails
   */
  | { linked: false; checked: Promise<string | undefined> };

/** Undefined when no comparison was made: the store holds no file of this content at `sizeBytes`. */
export async function matchContent(store: ContentStore, sha256: string, sizeBytes: number, hasher: Hasher, signal: AbortSignal, target: string, compare: CompareWithSource): Promise<Matched | undefined> {
  const path = store.blobPath(sha256);
  let stored: FileHandle;
  try {
    // never through a link, nor waiting on a pipe, in the store's place: verifyContent removes such things
    stored = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    // nothing stored under this name (or a link): nothing to compare with
    if (errorCode(err) === "ENOENT" || errorCode(err) === "ELOOP") return undefined;
    throw filesystemError("read", path, err);
  }
  const statStored = () => stored.stat({ bigint: true }).catch((err: unknown) => Promise.reject(filesystemError("read", path, err)));
  try {
    const found = await statStored();
    if (!found.isFile() || Number(found.size) !== sizeBytes) return undefined;
    // a stored copy found rotten ends the comparison: the file is downloaded whatever it holds
    const rotten = new AbortController();
    const checked = store.withBlob(sha256, signal, () => verifyContent(store, sha256, hasher, signal, true));
    checked.then(
      (signature) => signature === undefined && rotten.abort(),
      (err: unknown) => rotten.abort(err),
    );
    // a failure of the hash is told by whoever awaits it; never left unhandled meanwhile
    checked.catch(() => undefined);
    let same: boolean;
    try {
      same = await compare(stored, AbortSignal.any([signal, rotten.signal]));
    } catch (err) {
      // the hashing still reads the blob: it settles before the pull ends
      await checked.catch(() => undefined);
      if (signal.aborted) throw err;
      // ended by the hashing's verdict
      same = false;
    }
    if (!same) return { linked: false, checked };
    const signature = await checked;
    if (signature === undefined) return { linked: false, checked };
    // linked only when the copy compared is the copy hashed, unchanged since the hash began but by the
    // store's own steps (another install linking it meanwhile: the store's record follows those)
    const linked = await store.withBlob(sha256, signal, async () => {
      const now = signatureOf(await statStored());
      const trusted = now === signature || now === (await store.known.get(sha256))?.signature;
      return trusted && (await linkContent(store, sha256, target, now));
    });
    return linked ? { linked: true } : { linked: false, checked };
  } finally {
    await stored.close();
  }
}
