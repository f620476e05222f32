// The tokens a server accepts (--auth-tokens FILE): only their sha256 is kept
// at rest, each with a name (who is calling, for the audit log) and a role.
//   {"tokens": [{"name": "ci", "sha256": "<hex sha256 of the token>", "role": "reader"}]}
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { readFile } from "node:fs/promises";
import { ModelCacheError, quote } from "../errors.js";

/** reader: looks; consumer: also resolves models under leases; admin: everything (see method-roles.ts) */
export type Role = "reader" | "consumer" | "admin";
export const ROLES: readonly Role[] = ["reader", "consumer", "admin"];

export interface TokenEntry {
  name: string;
  sha256: string;
  role: Role;
}

export interface Caller {
  /** the token's name, or the client certificate's subject */
  name: string;
  role: Role;
}

const TOKEN_PREFIX = "mct_";

/** A fresh random token and the entry that lets it in. */
export function newToken(name: string, role: Role): { token: string; entry: TokenEntry } {
  checkEntryName(name, "--name");
  const token = TOKEN_PREFIX + randomBytes(32).toString("base64url");
  return { token, entry: { name, sha256: sha256Hex(token), role } };
}

function sha256Hex(value: string): string {
  return createHash("sha256").update(value, "utf8").digest("hex");
}

function checkEntryName(name: unknown, field: string): asserts name is string {
  if (typeof name !== "string" || !/^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/.test(name)) {
    throw new ModelCacheError("invalid_argument", `${field} must be 1 to 64 letters, digits, '.', '_', '@' or '-' (got ${typeof name === "string" ? quote(name) : typeof name})`);
  }
}

export class AccessTokens {
  /** the file the entries came from, read again by reload() */
  private file: string | undefined;

  private constructor(private entries: { name: string; digest: Buffer; role: Role }[]) {}

  static async load(file: string): Promise<AccessTokens> {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      throw new ModelCacheError("failed_precondition", `cannot read --auth-tokens file ${quote(file)}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    const tokens = AccessTokens.parse(text, file);
    tokens.file = file;
    return tokens;
  }

  /**
   * Reads the file again (SIGHUP): its entries replace these at once, so a
   * token added is accepted, and one removed refused, from the next call on.
   * A file that cannot be read or is invalid throws and changes nothing.
   */
  async reload(): Promise<number> {
    if (this.file === undefined) throw new Error("these tokens were not loaded from a file");
    this.entries = (await AccessTokens.load(this.file)).entries;
    return this.entries.length;
  }

  static parse(text: string, file = "--auth-tokens"): AccessTokens {
    const fail = (what: string) => new ModelCacheError("failed_precondition", `--auth-tokens file ${quote(file)}: ${what}; make entries with 'modelcache tokens new --name NAME --role reader|consumer|admin'`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw fail("is not JSON");
    }
    const tokens = (parsed as { tokens?: unknown } | null)?.tokens;
    if (!Array.isArray(tokens)) throw fail('needs {"tokens": [...]}');
    const seen = new Set<string>();
    const entries = tokens.map((entry: Partial<TokenEntry>, i) => {
      try {
        checkEntryName(entry?.name, `tokens[${i}].name`);
      } catch (err) {
        throw fail((err as Error).message);
      }
      if (typeof entry.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(entry.sha256)) throw fail(`tokens[${i}].sha256 must be 64 lowercase hex digits (the sha256 of the token, never the token)`);
      if (!ROLES.includes(entry.role as Role)) throw fail(`tokens[${i}].role must be one of ${ROLES.join(", ")}`);
      if (seen.has(entry.name!)) throw fail(`tokens[${i}].name ${quote(entry.name!)} appears twice`);
      seen.add(entry.name!);
      return { name: entry.name!, digest: Buffer.from(entry.sha256, "hex"), role: entry.role as Role };
    });
    return new AccessTokens(entries);
  }

  get size(): number {
    return this.entries.length;
  }

  /**
   * The caller a bearer token belongs to. Its sha256 is compared with every
   * entry in constant time, all of them every time, so neither the timing of
   * one comparison nor the number made tells anything about the entries.
   */
  identify(token: string): Caller | undefined {
    const digest = createHash("sha256").update(token, "utf8").digest();
    let found: Caller | undefined;
    for (const entry of this.entries) {
      if (timingSafeEqual(digest, entry.digest) && !found) found = { name: entry.name, role: entry.role };
    }
    return found;
  }
}
