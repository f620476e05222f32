// What is on disk for a model, derived from the disk alone: missing,
// installed (manifest parses, every file present with its size, and with
// `deep` its sha256), or unhealthy with the first problem found. The
// shallow checks are a few synchronous stat calls; only `deep` reads data.
import { type Stats, lstatSync } from "node:fs";
import { join } from "node:path";
import { ModelCacheError, errorCode } from "../errors.js";
import { exclusiveOf, installFiles } from "./footprint.js";
import { hashFile } from "./hash-file.js";
import { type CacheLayout, MANIFEST_FILE } from "./layout.js";
import type { Manifest } from "./manifest.js";
import { readManifest } from "./read-manifest.js";

export type UnhealthyReason = "manifest_unreadable" | "manifest_invalid" | "file_missing" | "size_mismatch" | "checksum_mismatch";

export interface InstallReport {
  status: "missing" | "installed" | "unhealthy";
  cacheDir: string;
  manifest?: Manifest;
  reason?: UnhealthyReason;
  detail?: string;
  footprintBytes: number;
  /** what dropping the install would free: files no other install shares, and the manifest */
  exclusiveBytes?: number;
  /** with `deep`: every file whose content does not hash to its manifest's sha256 */
  mismatched?: { path: string; sha256: string }[];
}

/** Hashes a file for the deep checks; the worker pool's, or hashFile on this thread. */
export type FileHasher = (path: string, signal: AbortSignal) => Promise<string>;

/**
 * Healthy shallow reports by the watched listing they were read from: while
 * the watch holds (footprint.ts hands out the same map), nothing a shallow
 * check looks at changed, so the report is the same. Frozen, being shared.
 */
const healthyReports = new WeakMap<ReadonlyMap<string, Stats>, InstallReport>();

export async function inspectInstall(layout: CacheLayout, name: string, deep: boolean, signal: AbortSignal, hasher: FileHasher = hashFile): Promise<InstallReport> {
  if (!deep) return inspectShallow(layout, name);
  const cacheDir = layout.modelDir(name);
  const files = installFiles(cacheDir, { watch: true, generation: layout.installsMoved });
  const found = lookAt(cacheDir, name, files);
  if ("status" in found) return found;
  const { manifest, footprint, exclusiveBytes } = found;
  // all files at once: the hasher spreads them over its threads; problems keep the manifest's order
  const digests = await hashAll(manifest.files.map((file) => join(cacheDir, file.path)), signal, hasher);
  const mismatched = manifest.files.filter((file, i) => digests[i] !== file.sha256).map(({ path, sha256 }) => ({ path, sha256 }));
  const problems = manifest.files.flatMap((file, i) =>
    digests[i] === file.sha256 ? [] : [{ reason: "checksum_mismatch" as const, detail: `artifact file '${file.path}' has sha256 ${digests[i]}, ${MANIFEST_FILE} says ${file.sha256}` }],
  );
  return verdict(cacheDir, manifest, footprint, exclusiveBytes, problems, mismatched);
}

/**
 * The shallow check, synchronous (a few stat calls, or none while the
 * install's watch holds): an install's healthy report is the same object for
 * as long as its watched listing is.
 */
export function inspectShallow(layout: CacheLayout, name: string): InstallReport {
  const cacheDir = layout.modelDir(name);
  const files = installFiles(cacheDir, { watch: true, generation: layout.installsMoved });
  const known = files && healthyReports.get(files);
  if (known) return known;
  const found = lookAt(cacheDir, name, files);
  if ("status" in found) return found;
  const report = verdict(cacheDir, found.manifest, found.footprint, found.exclusiveBytes, []);
  if (files && report.status === "installed") healthyReports.set(files, Object.freeze(report));
  return report;
}

type Looked = { manifest: Manifest; footprint: number; exclusiveBytes: number };

/** The install's manifest and sizes checked against its listing: what a shallow look finds wrong, or what a deep one goes on from. */
function lookAt(cacheDir: string, name: string, files: ReadonlyMap<string, Stats> | undefined): InstallReport | Looked {
  if (!files) {
    const stat = lstatSync(cacheDir, { throwIfNoEntry: false });
    if (!stat) return { status: "missing", cacheDir, footprintBytes: 0 };
    return unhealthy(cacheDir, 0, "manifest_unreadable", `'${cacheDir}' is ${stat.isDirectory() ? "a directory that cannot be listed" : "not a directory"}`);
  }
  let footprint = 0;
  for (const stat of files.values()) footprint += stat.size;
  const exclusiveBytes = exclusiveOf(files.values());

  let manifest: Manifest;
  try {
    manifest = readManifest(join(cacheDir, MANIFEST_FILE), files.get(MANIFEST_FILE));
  } catch (err) {
    if (err instanceof ModelCacheError) {
      return { ...unhealthy(cacheDir, footprint, "manifest_invalid", `${err.message}; pull the model again`), exclusiveBytes };
    }
    const why = errorCode(err) === "ENOENT" ? "is missing" : `cannot be read (${errorCode(err) ?? (err as Error).message})`;
    return { ...unhealthy(cacheDir, footprint, "manifest_unreadable", `${MANIFEST_FILE} ${why}; pull the model again`), exclusiveBytes };
  }
  if (manifest.name !== name) {
    return { ...unhealthy(cacheDir, footprint, "manifest_invalid", `${MANIFEST_FILE} names model '${manifest.name}', not '${name}'; pull the model again`, manifest), exclusiveBytes };
  }

  const problems: Problem[] = [];
  for (const file of manifest.files) {
    const size = files.get(file.path)?.size;
    if (size === undefined) {
      problems.push({ reason: "file_missing", detail: `artifact file '${file.path}' listed in ${MANIFEST_FILE} is missing or not a regular file` });
    } else if (size !== file.sizeBytes) {
      problems.push({ reason: "size_mismatch", detail: `artifact file '${file.path}' is ${size} bytes, ${MANIFEST_FILE} says ${file.sizeBytes}` });
    }
  }
  if (problems.length > 0) return verdict(cacheDir, manifest, footprint, exclusiveBytes, problems);
  return { manifest, footprint, exclusiveBytes };
}

type Problem = { reason: UnhealthyReason; detail: string };

function verdict(cacheDir: string, manifest: Manifest, footprint: number, exclusiveBytes: number, problems: Problem[], mismatched?: InstallReport["mismatched"]): InstallReport {
  const [first] = problems;
  if (!first) return { status: "installed", cacheDir, manifest, footprintBytes: footprint, exclusiveBytes };
  const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? "s" : ""})` : "";
  return { ...unhealthy(cacheDir, footprint, first.reason, `${first.detail}${more}; pull the model again`, manifest), exclusiveBytes, mismatched };
}

/**
 * The sha256 of every file, all asked for at once. Each file gets a signal of
 * its own, and the caller's signal one listener that aborts them all: a
 * hasher that listens on the signal it is given would otherwise put one
 * listener per file on the caller's signal (Node warns past ten).
 */
async function hashAll(paths: string[], signal: AbortSignal, hasher: FileHasher): Promise<string[]> {
  signal.throwIfAborted();
  const controllers = paths.map(() => new AbortController());
  const abortAll = () => {
    for (const controller of controllers) controller.abort(signal.reason);
  };
  signal.addEventListener("abort", abortAll, { once: true });
  try {
    return await Promise.all(paths.map((path, i) => hasher(path, controllers[i]!.signal)));
  } finally {
    signal.removeEventListener("abort", abortAll);
  }
}

function unhealthy(cacheDir: string, footprint: number, reason: UnhealthyReason, detail: string, manifest?: Manifest): InstallReport {
  return { status: "unhealthy", cacheDir, manifest, reason, detail, footprintBytes: footprint };
}
