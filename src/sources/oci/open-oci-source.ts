// A repository of an OCI registry as an artifact source (ModelPack, Docker's
// model format, ORAS artifacts): the tag or digest is resolved to a manifest
// (an index: its first model manifest), whose digest is verified and is the
// resolved commit; each raw layer is one file at its annotated path, its
// digest the file's sha256, so content the store holds is linked rather than
// downloaded; blobs come with the hub's resumable, verified downloads. An
// archive layer (.tar, .tar+gzip) is fetched and unpacked by the pull itself
// (`unpack`), under the model's lock and after PullStarted, never while the
// source is opened.
import { createHash } from "node:crypto";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { MANIFEST_FILE, UNPACKED_DIR, checkArtifactPath } from "../../cache/layout.js";
import { ModelCacheError, quote } from "../../errors.js";
import type { FetchingSource, RemoteSourceOptions, SourceFile, TransferObserver } from "../artifact-source.js";
import { passesFilters } from "../file-filters.js";
import { Connections } from "../hub/connections.js";
import type { DownloadOptions } from "../hub/download-file.js";
import { fileTransfers } from "../hub/file-transfers.js";
import { OciHttp } from "./oci-http.js";
import { type ArchiveLayer, type OciFile, fetchArchiveLayers } from "./fetch-archive-layers.js";
import { OCI_DIGEST, parseOciReference, registryBaseUrl } from "./oci-reference.js";

export interface OciSourceOptions extends RemoteSourceOptions {
  source: string;
  revision: string;
  credential?: { alias: string; secret: string };
  /** registries (host:port) reached over plain HTTP */
  plainHttp: readonly string[];
  /** the model's filters: applied here to the entries of archive layers (a listing of raw layers only is filtered by the pull) */
  include?: string[];
  exclude?: string[];
  /** the pull's limits, checked on the layers before an archive is fetched and on every unpacked byte */
  limits?: { check(files: readonly SourceFile[]): void; maxFiles: number; maxFileBytes: number; maxTotalBytes: number };
}

const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPT = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ");
const INDEXES = [OCI_INDEX, DOCKER_LIST];
/** the annotations that name a layer's file, most specific first */
const PATH_ANNOTATIONS = ["org.cncf.model.filepath", "org.cnai.model.filepath", "org.opencontainers.image.title"];
const CONNECTIONS = 4;


interface Descriptor {
  mediaType?: string;
  digest?: string;
  size?: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

interface Manifest {
  mediaType?: string;
  artifactType?: string;
  config?: Descriptor;
  layers?: Descriptor[];
  manifests?: Descriptor[];
}

type OciOptions = Pick<OciSourceOptions, "source" | "revision" | "credential" | "plainHttp" | "dispatcher" | "signal">;

function httpOf(options: OciOptions) {
  const reference = parseOciReference(options.source);
  const http = new OciHttp({ baseUrl: registryBaseUrl(reference, options.plainHttp), repository: reference.repository, credential: options.credential, dispatcher: options.dispatcher });
  return { reference, http, tag: options.revision === "" ? "latest" : options.revision };
}

/** The digest the revision names now: one manifest request (HEAD), nothing downloaded. */
export async function resolveOciDigest(options: OciOptions): Promise<string> {
  const { http, tag } = httpOf(options);
  if (OCI_DIGEST.test(tag)) return tag;
  const head = await http.manifest(tag, ACCEPT, options.signal, "HEAD");
  if (head.digest !== undefined && OCI_DIGEST.test(head.digest)) return head.digest;
  // a registry that names no digest: the manifest's own bytes tell it
  const got = await http.manifest(tag, ACCEPT, options.signal);
  return `sha256:${createHash("sha256").update(got.bytes).digest("hex")}`;
}

export async function openOciSource(options: OciSourceOptions): Promise<FetchingSource> {
  const { reference, http, tag } = httpOf(options);
  const where = `oci://${reference.registry}/${reference.repository}`;
  const top = await fetchManifest(http, tag, where, options.signal);
  let manifest = top.manifest;
  if (INDEXES.includes(top.mediaType) || manifest.manifests !== undefined) {
    // an index: the first manifest in it that is a model
    let found: Manifest | undefined;
    for (const entry of manifest.manifests ?? []) {
      if (typeof entry.digest !== "string" || !OCI_DIGEST.test(entry.digest)) continue;
      const inner = await fetchManifest(http, entry.digest, where, options.signal);
      if (modelKind(inner.manifest) !== undefined) {
        found = inner.manifest;
        break;
      }
    }
    if (!found) throw new ModelCacheError("failed_precondition", `the index ${top.digest} of ${quote(where)} holds no model manifest (media type ${top.mediaType || OCI_INDEX}): push a ModelPack, Docker model or ORAS artifact`);
    manifest = found;
  }
  if (modelKind(manifest) === undefined) {
    const type = manifest.artifactType ?? manifest.config?.mediaType ?? top.mediaType;
    throw new ModelCacheError("failed_precondition", `${quote(where)} at ${top.digest} is not a model: its media type is ${quote(String(type))} (a container image or an unknown artifact); push a ModelPack, Docker model or ORAS artifact`);
  }

  // partials are kept per manifest, so a moved tag never resumes into another blob
  const partialDir = options.layout.partialDir(options.name, top.digest.slice("sha256:".length, "sha256:".length + 40));
  const files: OciFile[] = [];
  const archives: ArchiveLayer[] = [];
  for (const [i, layer] of (manifest.layers ?? []).entries()) {
    const mediaType = String(layer.mediaType ?? "");
    const path = PATH_ANNOTATIONS.map((key) => layer.annotations?.[key]).find((value) => value !== undefined);
    if (typeof layer.digest !== "string" || !OCI_DIGEST.test(layer.digest) || !Number.isSafeInteger(layer.size) || layer.size! < 0) {
      throw new ModelCacheError("failed_precondition", `layer ${i} of ${quote(where)} at ${top.digest} has no sha256 digest or size`);
    }
    if (path === undefined) {
      throw new ModelCacheError("failed_precondition", `layer ${i} of ${quote(where)} (media type ${quote(mediaType)}, digest ${layer.digest}) names no file path (org.cncf.model.filepath or org.opencontainers.image.title)`);
    }
    const unpack = /\.tar(\+[a-z0-9]+)?$/.test(mediaType) && !(path === layer.annotations?.["org.opencontainers.image.title"] && layer.annotations?.["io.deis.oras.content.unpack"] !== "true");
    if (unpack) {
      if (!/\.tar(\+gzip)?$/.test(mediaType)) {
        throw new ModelCacheError("failed_precondition", `layer ${i} of ${quote(where)} has media type ${quote(mediaType)} (digest ${layer.digest}), which this server cannot unpack: push it as .tar, .tar+gzip or raw layers`);
      }
      if (path !== "") checkArtifactPath(path, `layer ${i} of ${quote(where)}`);
      archives.push({ index: i, digest: layer.digest, size: layer.size!, mediaType, prefix: path });
      continue;
    }
    checkArtifactPath(path, `layer ${i} of ${quote(where)}`);
    if (path === MANIFEST_FILE) throw new ModelCacheError("failed_precondition", `layer ${i} of ${quote(where)} is named ${quote(path)}, which the cache keeps for itself`);
    files.push({ path, sizeBytes: layer.size!, sha256: layer.digest.slice("sha256:".length), digest: layer.digest });
  }
  const seen = new Set<string>();
  for (const file of files) {
    if (seen.has(file.path)) throw new ModelCacheError("failed_precondition", `two layers of ${quote(where)} name the file ${quote(file.path)}`);
    seen.add(file.path);
  }
  if (files.length + archives.length === 0) throw new ModelCacheError("failed_precondition", `${quote(where)} at ${top.digest} has no layers`);
  const byPath = (a: SourceFile, b: SourceFile) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0);
  const include = options.include ?? [];
  const exclude = options.exclude ?? [];
  // with archive layers the filters apply once their entries are known; the pull filters a listing of raw layers itself
  const kept = files.filter((f) => passesFilters(f.path, include, exclude));
  const listed = archives.length > 0 ? kept : files;
  listed.sort(byPath);
  // the layers the model keeps (the filters tell an archive's entries only once it is unpacked, and each is checked then); an archive's blob size is checked now
  options.limits?.check([...kept, ...archives.map((a) => ({ path: a.prefix || a.digest, sizeBytes: a.size }))]);

  const transfers = fileTransfers(new Connections(CONNECTIONS, options.parallelRangeBelowBytesPerSecond), options.parallelRangeMinBytes);
  const origin = `the registry ${reference.registry} (${reference.repository})`;
  return {
    description: `oci:${reference.registry}/${reference.repository}@${top.digest}`,
    resolvedCommit: top.digest,
    files: listed,
    ...(archives.length > 0 && {
      archives: archives.map((a) => ({ path: a.digest, sizeBytes: a.size })),
      unpack: (signal: AbortSignal, observer: TransferObserver) =>
        fetchArchiveLayers({ archives, files, where, partialDir, include, exclude, limits: options.limits, download: (file, path, s, onBytes) => transfers.fetch(request(file, path, s, onBytes)), signal, observer }),
    }),
    fetch: async (file, signal, onBytes) => {
      const local = (file as OciFile).localPath;
      if (local === undefined) return transfers.fetch(request(file as OciFile, join(partialDir, file.path), signal, onBytes));
      // unpacked from an archive layer already verified: the store takes it as it is; its bytes were reported as the archive's
      return { path: local, sha256: file.sha256! };
    },
    match: async (file, stored, signal, onBytes) => {
      // an archive layer's entry is not fetched: the forced pull fetched and unpacked its layer again
      if ((file as OciFile).localPath !== undefined) return false;
      return transfers.match(request(file as OciFile, join(partialDir, file.path), signal, onBytes), stored);
    },
    async installed() {
      await rm(options.layout.partialDir(options.name), { recursive: true, force: true });
    },
    async abandoned() {
      // the entries are unpacked again from the verified blobs in .layers, which the next pull resumes from
      await rm(join(partialDir, UNPACKED_DIR), { recursive: true, force: true });
    },
  };

  function request(file: OciFile, partialPath: string, signal: AbortSignal, onBytes: (bytes: number) => void): DownloadOptions {
    // the rate cap is the server's one Bandwidth, the same hub and S3 downloads take from, in the same download functions
    return { http, url: http.url(`blobs/${file.digest}`), origin: `${origin}, layer ${file.digest}`, path: file.path, partialPath, sizeBytes: file.sizeBytes, sha256: file.sha256!, bandwidth: options.bandwidth, directWrites: options.directWrites, signal, onBytes };
  }
}

/** A manifest by tag or digest, its bytes checked against the digest asked for or the one the registry names. */
async function fetchManifest(http: OciHttp, reference: string, where: string, signal: AbortSignal): Promise<{ manifest: Manifest; mediaType: string; digest: string }> {
  const got = await http.manifest(reference, ACCEPT, signal);
  const digest = `sha256:${createHash("sha256").update(got.bytes).digest("hex")}`;
  const expected = OCI_DIGEST.test(reference) ? reference : got.digest !== undefined && OCI_DIGEST.test(got.digest) ? got.digest : undefined;
  if (expected !== undefined && expected !== digest) {
    throw new ModelCacheError("data_loss", `the manifest of ${quote(where)} at ${quote(reference)} does not match its digest: its bytes have ${digest}, expected ${expected}; nothing was installed`);
  }
  let manifest: Manifest;
  try {
    manifest = JSON.parse(got.bytes.toString("utf8")) as Manifest;
  } catch (err) {
    throw new ModelCacheError("failed_precondition", `the manifest of ${quote(where)} at ${quote(reference)} is not JSON (${(err as Error).message})`);
  }
  if (typeof manifest !== "object" || manifest === null) throw new ModelCacheError("failed_precondition", `the manifest of ${quote(where)} at ${quote(reference)} is not a JSON object`);
  return { manifest, mediaType: got.mediaType || String(manifest.mediaType ?? ""), digest };
}

function isModelType(type: string | undefined): boolean {
  return type !== undefined && /^application\/vnd\.(cncf|cnai)\.model\.|^application\/vnd\.docker\.ai\./.test(type);
}

/** What kind of model a manifest is, or undefined when it is none (a container image, an unknown artifact). */
function modelKind(manifest: Manifest): string | undefined {
  if (isModelType(manifest.artifactType)) return manifest.artifactType;
  if (isModelType(manifest.config?.mediaType)) return manifest.config!.mediaType;
  const images = ["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];
  // an ORAS artifact: its own artifact or config type, and every layer names its file
  const type = manifest.artifactType ?? manifest.config?.mediaType;
  if (type !== undefined && !images.includes(type) && (manifest.layers ?? []).length > 0 && manifest.layers!.every((l) => l.annotations?.["org.opencontainers.image.title"] !== undefined)) return type;
  return undefined;
}
