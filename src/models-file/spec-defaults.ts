// The fields a model spec may leave out where people write specs by hand (a
// models file, `modelcache models register`), and what they default to: one
// set for both, so a spec that one accepts the other accepts too. The
// RegisterModel RPC itself still takes every field as given.
import type { ModelSpecInput } from "../registry/model-record.js";

/** The task when none is given: the only one there is. */
export const DEFAULT_TASK = "embedding";

/** The revision when none is given: a hub's default branch; an s3:// source has none (its listing is what a pull resolves); an oci:// source's tag `latest`. */
export function defaultRevision(source: string): string {
  return source.startsWith("s3://") ? "" : source.startsWith("oci://") ? "latest" : "main";
}

/** `input` with an empty revision and an unset task filled in. */
export function withSpecDefaults(input: ModelSpecInput): ModelSpecInput {
  return { ...input, revision: input.revision === "" ? defaultRevision(input.source) : input.revision, task: input.task ?? DEFAULT_TASK };
}
