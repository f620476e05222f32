// Checks a caller's spec and fills in the defaults; every refusal names the
// field and says how to fix it.
import { ModelCacheError, quote } from "../errors.js";
import type { Engine, ModelSpec, ModelSpecInput, PullPolicy, TrustPolicy } from "./model-record.js";
import { checkName } from "./names.js";
import { OCI_DIGEST, OCI_SOURCE, OCI_TAG } from "../sources/oci/oci-reference.js";

const PULL_POLICIES: readonly PullPolicy[] = ["never", "if_missing", "always"];
const TRUST_POLICIES: readonly TrustPolicy[] = ["disabled", "allow_remote_code"];
const MAX_DIMENSIONS = 65536;
const MAX_REFERENCE = 512;

export function validateModelSpec(input: ModelSpecInput): ModelSpec {
  const { spec, errors } = checkModelSpec(input);
  if (errors.length > 0) throw errors[0];
  return spec!;
}

/** Every refusal of the spec, not only the first (a models file reports them all at once); the spec when there is none. */
export function checkModelSpec(input: ModelSpecInput): { spec?: ModelSpec; errors: ModelCacheError[] } {
  const errors: ModelCacheError[] = [];
  const check = <T>(run: () => T): T | undefined => {
    try {
      return run();
    } catch (err) {
      if (!(err instanceof ModelCacheError)) throw err;
      errors.push(err);
      return undefined;
    }
  };
  const name = check(() => checkName("model.name", input.name));
  const source = check(() => checkSource(checkReference("model.source", input.source, "a hub repo id such as 'sentence-transformers/all-MiniLM-L6-v2'")));
  // an s3:// source has no revisions: its listing's digest is what a pull resolves
  const revision = check(() =>
    (source ?? input.source).startsWith("s3://") && input.revision === ""
      ? ""
      : (source ?? input.source).startsWith("oci://")
        ? checkOciRevision(input.revision)
        : checkReference("model.revision", input.revision, "a commit sha or tag such as 'main'"),
  );

  check(() => {
    if (input.task === "embedding") return;
    const got = input.task === undefined ? "it is unset" : `got ${input.task}`;
    throw new ModelCacheError("invalid_argument", `model.task must be TASK_EMBEDDING: only embedding models are supported (${got})`);
  });
  check(() => {
    if (Number.isInteger(input.dimensions) && input.dimensions >= 1 && input.dimensions <= MAX_DIMENSIONS) return;
    throw new ModelCacheError("invalid_argument", `model.dimensions must be between 1 and ${MAX_DIMENSIONS} (got ${input.dimensions})`);
  });
  const engine = check(() => oneOf<Engine>("model.engine", input.engine, ["candle"], "candle", "ENGINE_CANDLE"));
  const pullPolicy = check(() => oneOf("model.pull_policy", input.pullPolicy, PULL_POLICIES, "if_missing", "PULL_POLICY_IF_MISSING"));
  const trustPolicy = check(() => oneOf("model.trust_policy", input.trustPolicy, TRUST_POLICIES, "disabled", "TRUST_POLICY_DISABLED"));
  check(() => {
    if (trustPolicy !== "allow_remote_code" || input.acknowledgeRemoteCodeRisk) return;
    throw new ModelCacheError(
      "invalid_argument",
      "model.trust_policy TRUST_POLICY_ALLOW_REMOTE_CODE lets the model's own code run: set model.acknowledge_remote_code_risk to true to accept that risk",
    );
  });
  const credentialAlias = check(() => (input.credentialAlias === "" ? "" : checkName("model.credential_alias", input.credentialAlias)));
  const include = check(() => checkPatterns("model.include", input.include));
  const exclude = check(() => checkPatterns("model.exclude", input.exclude));
  if (errors.length > 0) return { errors };

  return {
    errors,
    spec: {
      name: name!,
      source: source!,
      revision: revision!,
      task: "embedding",
      dimensions: input.dimensions,
      engine: engine!,
      pullPolicy: pullPolicy!,
      trustPolicy: trustPolicy!,
      acknowledgeRemoteCodeRisk: input.acknowledgeRemoteCodeRisk,
      credentialAlias: credentialAlias!,
      include: include!,
      exclude: exclude!,
      pinned: input.pinned,
    },
  };
}

const MAX_PATTERNS = 64;
const MAX_PATTERN_LENGTH = 256;

function checkPatterns(field: string, patterns: string[]): string[] {
  if (patterns.length > MAX_PATTERNS) {
    throw new ModelCacheError("invalid_argument", `${field} has ${patterns.length} patterns: at most ${MAX_PATTERNS} are allowed`);
  }
  patterns.forEach((pattern, i) => {
    if (pattern === "" || pattern.length > MAX_PATTERN_LENGTH || /[\u0000-\u001f\u007f]/.test(pattern)) {
      throw new ModelCacheError(
        "invalid_argument",
        `${field}[${i}] ${quote(pattern)} is not a usable glob: give 1-${MAX_PATTERN_LENGTH} printable characters, such as '*.safetensors' or 'onnx/'`,
      );
    }
  });
  return patterns;
}

const MAX_REPO_ID = 96;
// the hub's own rule for a repo id: [owner/]name, each part of letters, digits, '_', '-' and '.', starting and ending with a letter, digit or '_'
const REPO_ID = /^(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\/)?[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$/;
// an S3 bucket's naming rule (3-63 lowercase letters, digits, '.' and '-'), then an optional key prefix
const S3_LOCATION = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/;

/**
 * A source names where files come from, never a path: a hub repo id or an
 * s3:// location or an oci:// repository. Refused here, at registration, rather than when a pull
 * first uses it.
 */
function checkSource(value: string): string {
  if (value.startsWith("oci://")) {
    if (OCI_SOURCE.test(value)) return value;
    throw new ModelCacheError(
      "invalid_argument",
      `model.source ${quote(value)} is not an oci:// source: give 'oci://REGISTRY/REPOSITORY' (REGISTRY host[:port], REPOSITORY lowercase path components) such as 'oci://registry.example.com/models/minilm'`,
    );
  }
  const s3 = S3_LOCATION.exec(value);
  if (s3) {
    const segments = (s3[2] ?? "").split("/");
    if (!segments.some((segment) => segment === "." || segment === "..") && !value.includes("\\")) return value;
  } else if (value.length <= MAX_REPO_ID && REPO_ID.test(value) && !value.includes("--") && !value.includes("..") && !value.endsWith(".git")) {
    return value;
  }
  throw new ModelCacheError(
    "invalid_argument",
    `model.source ${quote(value)} is neither a hub repo id nor an s3:// location: give 'owner/name' or 'name' ` +
      `(letters, digits, '_', '-' and '.', no '--' or '..', at most ${MAX_REPO_ID} characters) such as 'sentence-transformers/all-MiniLM-L6-v2', or 's3://bucket/prefix'`,
  );
}

/** An oci:// revision: a tag (empty: latest) or a manifest digest. */
function checkOciRevision(value: string): string {
  if (value === "" || OCI_TAG.test(value) || OCI_DIGEST.test(value)) return value;
  throw new ModelCacheError("invalid_argument", `model.revision ${quote(value.slice(0, 140))} of an oci:// source is neither a tag (letters, digits, '_', '.', '-', at most 128) nor a digest 'sha256:<64 hex>'`);
}

function checkReference(field: string, value: string, example: string): string {
  if (value === "") {
    throw new ModelCacheError("invalid_argument", `${field} is required: give ${example}`);
  }
  if (/\s/.test(value)) {
    throw new ModelCacheError("invalid_argument", `${field} ${quote(value)} must not contain whitespace`);
  }
  if (/[\u0000-\u001f\u007f]/.test(value)) {
    throw new ModelCacheError("invalid_argument", `${field} ${quote(value)} must not contain control characters`);
  }
  if (value.length > MAX_REFERENCE) {
    throw new ModelCacheError("invalid_argument", `${field} is ${value.length} characters long: at most ${MAX_REFERENCE} are allowed`);
  }
  return value;
}

function oneOf<T extends string>(
  field: string,
  value: string | undefined,
  allowed: readonly T[],
  fallback: T,
  fallbackLabel: string,
): T {
  if (value === undefined) return fallback;
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw new ModelCacheError("invalid_argument", `${field} has an unknown value (${value}); leave it unset for ${fallbackLabel}`);
}
