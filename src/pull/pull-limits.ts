// What one pull may bring in, checked on the source's listing (after the
// filters) before anything is fetched or copied: RESOURCE_EXHAUSTED naming
// the limit and its flag.
import { ModelCacheError, quote } from "../errors.js";
import type { SourceFile } from "../sources/artifact-source.js";

export interface PullLimits {
  /** --max-files-per-pull */
  maxFiles: number;
  /** --max-file-bytes */
  maxFileBytes: number;
  /** --max-pull-bytes */
  maxTotalBytes: number;
}

export const DEFAULT_PULL_LIMITS: PullLimits = {
  maxFiles: 10_000,
  maxFileBytes: 128 * 1024 ** 3,
  maxTotalBytes: 512 * 1024 ** 3,
};

export function checkPullLimits(name: string, files: readonly SourceFile[], limits: PullLimits): void {
  const refuse = (what: string) => new ModelCacheError("resource_exhausted", `model ${quote(name)}: ${what}; narrow it with include/exclude, or raise the server's limit`);
  if (files.length > limits.maxFiles) throw refuse(`the source lists ${files.length} files, more than --max-files-per-pull (${limits.maxFiles})`);
  let total = 0;
  for (const file of files) {
    if (file.sizeBytes > limits.maxFileBytes) throw refuse(`file ${quote(file.path)} is ${file.sizeBytes} bytes, more than --max-file-bytes (${limits.maxFileBytes})`);
    total += file.sizeBytes;
  }
  if (total > limits.maxTotalBytes) throw refuse(`its files come to ${total} bytes, more than --max-pull-bytes (${limits.maxTotalBytes})`);
}
