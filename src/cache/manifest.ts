// manifest.json: what an install holds, each file with its sha256 and size.
// The JSON keys are the contract's (snake_case); parsing is strict, so a
// manifest that parses can be trusted to describe paths inside the install.
import { ModelCacheError } from "../errors.js";
import { checkArtifactPath } from "./layout.js";

export interface ManifestFile {
  path: string;
  sha256: string;
  sizeBytes: number;
}

export interface Manifest {
  name: string;
  source: string;
  revision: string;
  task: string;
  engine: string;
  dimensions: number;
  installedAtMs: number;
  totalSizeBytes: number;
  /** sorted by path */
  files: ManifestFile[];
  /** the hub commit the files came from; "" for a local directory */
  resolvedCommit: string;
}

export function serializeManifest(manifest: Manifest): string {
  const json = {
    name: manifest.name,
    source: manifest.source,
    revision: manifest.revision,
    task: manifest.task,
    engine: manifest.engine,
    dimensions: manifest.dimensions,
    installed_at_unix_ms: manifest.installedAtMs,
    total_size_bytes: manifest.totalSizeBytes,
    files: manifest.files.map((f) => ({ path: f.path, sha256: f.sha256, size_bytes: f.sizeBytes })),
    resolved_commit: manifest.resolvedCommit,
  };
  return `${JSON.stringify(json, null, 2)}\n`;
}

/** Parses manifest.json text; throws invalid_argument naming the first problem. */
export function parseManifest(text: string): Manifest {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw invalid(`is not valid JSON (${(err as Error).message})`);
  }
  const object = asObject(json, "the top level");
  const files = object.files;
  if (!Array.isArray(files)) throw invalid("field 'files' must be an array");
  const seen = new Set<string>();
  const parsed = files.map((raw, i) => {
    const entry = asObject(raw, `files[${i}]`);
    const path = text_(entry, "path", `files[${i}].path`);
    try {
      checkArtifactPath(path, `files[${i}].path`);
    } catch (err) {
      throw invalid((err as Error).message);
    }
    if (seen.has(path)) throw invalid(`files[${i}].path '${path}' is listed twice`);
    seen.add(path);
    const sha256 = text_(entry, "sha256", `files[${i}].sha256`);
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw invalid(`files[${i}].sha256 must be 64 lower-case hex digits`);
    return { path, sha256, sizeBytes: count(entry, "size_bytes", `files[${i}].size_bytes`) };
  });
  const manifest: Manifest = {
    name: text_(object, "name", "name"),
    source: text_(object, "source", "source"),
    revision: text_(object, "revision", "revision"),
    task: text_(object, "task", "task"),
    engine: text_(object, "engine", "engine"),
    dimensions: count(object, "dimensions", "dimensions"),
    installedAtMs: count(object, "installed_at_unix_ms", "installed_at_unix_ms"),
    totalSizeBytes: count(object, "total_size_bytes", "total_size_bytes"),
    files: parsed,
    resolvedCommit: object.resolved_commit === undefined ? "" : text_(object, "resolved_commit", "resolved_commit"),
  };
  const sum = parsed.reduce((total, f) => total + f.sizeBytes, 0);
  if (sum !== manifest.totalSizeBytes) {
    throw invalid(`total_size_bytes is ${manifest.totalSizeBytes} but the files add up to ${sum}`);
  }
  return manifest;
}

function invalid(problem: string): ModelCacheError {
  return new ModelCacheError("invalid_argument", `manifest.json ${problem}`);
}

function asObject(value: unknown, where: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw invalid(`${where} must be an object`);
  return value as Record<string, unknown>;
}

function text_(object: Record<string, unknown>, key: string, where: string): string {
  const value = object[key];
  if (typeof value !== "string") throw invalid(`field '${where}' is missing or not a string`);
  return value;
}

function count(object: Record<string, unknown>, key: string, where: string): number {
  const value = object[key];
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw invalid(`field '${where}' is missing or not a non-negative integer`);
  }
  return value;
}
