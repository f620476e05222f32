// What is on disk for a model, derived from the disk alone: missing,
// installed (manifest parses, every file present with its size, and with
// `deep` its sha256), or unhealthy with the first problem found.
import { lstat, readFile } from "node:fs/promises";
import { join } from "node:path";
import { errorCode } from "../errors.js";
import { footprintBytes } from "./footprint.js";
import { hashFile } from "./hash-file.js";
import { type CacheLayout, MANIFEST_FILE } from "./layout.js";
import { type Manifest, parseManifest } from "./manifest.js";

export type UnhealthyReason = "manifest_unreadable" | "manifest_invalid" | "file_missing" | "size_mismatch" | "checksum_mismatch";

export interface InstallReport {
  status: "missing" | "installed" | "unhealthy";
  cacheDir: string;
  manifest?: Manifest;
  reason?: UnhealthyReason;
  detail?: string;
  footprintBytes: number;
}

export async function inspectInstall(layout: CacheLayout, name: string, deep: boolean, signal: AbortSignal): Promise<InstallReport> {
  const cacheDir = layout.modelDir(name);
  const info = await lstat(cacheDir).catch((err: unknown) => {
    if (errorCode(err) === "ENOENT") return undefined;
    throw err;
  });
  if (!info) return { status: "missing", cacheDir, footprintBytes: 0 };
  if (!info.isDirectory()) {
    return unhealthy(cacheDir, 0, "manifest_unreadable", `'${cacheDir}' is not a directory`);
  }
  const footprint = await footprintBytes(cacheDir);

  let text: string;
  try {
    text = await readFile(join(cacheDir, MANIFEST_FILE), "utf8");
  } catch (err) {
    const why = errorCode(err) === "ENOENT" ? "is missing" : `cannot be read (${errorCode(err) ?? (err as Error).message})`;
    return unhealthy(cacheDir, footprint, "manifest_unreadable", `${MANIFEST_FILE} ${why}; pull the model again`);
  }
  let manifest: Manifest;
  try {
    manifest = parseManifest(text);
  } catch (err) {
    return unhealthy(cacheDir, footprint, "manifest_invalid", `${(err as Error).message}; pull the model again`);
  }
  if (manifest.name !== name) {
    return unhealthy(cacheDir, footprint, "manifest_invalid", `${MANIFEST_FILE} names model '${manifest.name}', not '${name}'; pull the model again`, manifest);
  }

  const problems: { reason: UnhealthyReason; detail: string }[] = [];
  const intact: Manifest["files"] = [];
  for (const file of manifest.files) {
    const path = join(cacheDir, file.path);
    const stat = await lstat(path).catch(() => undefined);
    if (!stat?.isFile()) {
      problems.push({ reason: "file_missing", detail: `artifact file '${file.path}' listed in ${MANIFEST_FILE} is ${stat ? "not a regular file" : "missing"}` });
    } else if (stat.size !== file.sizeBytes) {
      problems.push({ reason: "size_mismatch", detail: `artifact file '${file.path}' is ${stat.size} bytes, ${MANIFEST_FILE} says ${file.sizeBytes}` });
    } else {
      intact.push(file);
    }
  }
  if (deep && problems.length === 0) {
    for (const file of intact) {
      const sha256 = await hashFile(join(cacheDir, file.path), signal);
      if (sha256 !== file.sha256) {
        problems.push({ reason: "checksum_mismatch", detail: `artifact file '${file.path}' has sha256 ${sha256}, ${MANIFEST_FILE} says ${file.sha256}` });
      }
    }
  }
  const [first] = problems;
  if (!first) return { status: "installed", cacheDir, manifest, footprintBytes: footprint };
  const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? "s" : ""})` : "";
  return unhealthy(cacheDir, footprint, first.reason, `${first.detail}${more}; pull the model again`, manifest);
}

function unhealthy(cacheDir: string, footprint: number, reason: UnhealthyReason, detail: string, manifest?: Manifest): InstallReport {
  return { status: "unhealthy", cacheDir, manifest, reason, detail, footprintBytes: footprint };
}
