// Secrets at rest: each one sealed with AES-256-GCM under the vault key, with
// a fresh 96-bit nonce and its alias as associated data (so a sealed value
// copied to another alias does not open). Stored as
//   mcv1.<nonce>.<ciphertext>.<tag>   (base64url parts)
// Secrets an earlier version stored in plaintext are sealed at start, and the
// store is compacted so the plaintext leaves the LevelDB files.
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { ModelCacheError, quote } from "../errors.js";
import type { LevelSublevel } from "./sublevel.js";

const SEALED = /^mcv1\.([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]*)\.([A-Za-z0-9_-]{22})$/;

export class Vault {
  constructor(
    private readonly store: LevelSublevel<string>,
    private readonly key: Buffer,
  ) {}

  /** What the store holds: sealed secrets (which a new key could not open), plaintext ones (from an earlier version). */
  static async census(store: LevelSublevel<string>): Promise<{ sealed: boolean; plaintext: boolean }> {
    const found = { sealed: false, plaintext: false };
    for await (const stored of store.values()) {
      if (SEALED.test(stored)) found.sealed = true;
      else found.plaintext = true;
    }
    return found;
  }

  async put(alias: string, secret: string): Promise<void> {
    await this.store.put(alias, this.seal(alias, secret));
  }

  async get(alias: string): Promise<string | undefined> {
    const stored = await this.store.get(alias);
    return stored === undefined ? undefined : this.open(alias, stored);
  }

  async has(alias: string): Promise<boolean> {
    return (await this.store.get(alias)) !== undefined;
  }

  async del(alias: string): Promise<void> {
    await this.store.del(alias);
  }

  /** Seals every secret still stored in plaintext, in one batch. */
  async sealPlaintext(): Promise<void> {
    const batch = this.store.batch();
    for await (const [alias, stored] of this.store.iterator()) {
      if (!SEALED.test(stored)) batch.put(alias, this.seal(alias, stored));
    }
    await batch.write();
  }

  private seal(alias: string, secret: string): string {
    const nonce = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.key, nonce);
    cipher.setAAD(Buffer.from(alias, "utf8"));
    const ciphertext = Buffer.concat([cipher.update(secret, "utf8"), cipher.final()]);
    return `mcv1.${nonce.toString("base64url")}.${ciphertext.toString("base64url")}.${cipher.getAuthTag().toString("base64url")}`;
  }

  private open(alias: string, stored: string): string {
    const parts = SEALED.exec(stored);
    try {
      if (!parts) throw new Error("not sealed");
      const decipher = createDecipheriv("aes-256-gcm", this.key, Buffer.from(parts[1]!, "base64url"));
      decipher.setAAD(Buffer.from(alias, "utf8"));
      decipher.setAuthTag(Buffer.from(parts[3]!, "base64url"));
      return Buffer.concat([decipher.update(Buffer.from(parts[2]!, "base64url")), decipher.final()]).toString("utf8");
    } catch {
      throw new ModelCacheError(
        "failed_precondition",
        `the secret of alias ${quote(alias)} cannot be opened with this server's vault key (--vault-key-file): was the key replaced? store the secret again with PutSecret`,
      );
    }
  }
}
