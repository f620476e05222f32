// An oci:// source as a registry (host[:port]) and a repository, and how the
// registry is reached: HTTPS, or plain HTTP for registries named in --oci-plain-http.
import { ModelCacheError, quote } from "../../errors.js";

export interface OciReference {
  /** host[:port] */
  registry: string;
  repository: string;
}

// host[:port], then repository path components as the distribution spec allows them
export const OCI_SOURCE = /^oci:\/\/([A-Za-z0-9.-]+(?::[0-9]{1,5})?)\/([a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)$/;
export const OCI_DIGEST = /^sha256:[0-9a-f]{64}$/;
// the distribution spec's tag rule
export const OCI_TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

export function parseOciReference(source: string): OciReference {
  const match = OCI_SOURCE.exec(source);
  if (!match) throw new ModelCacheError("invalid_argument", `model.source ${quote(source)} is not an oci:// source such as 'oci://registry.example.com/models/minilm'`);
  return { registry: match[1]!, repository: match[2]! };
}

/** The registry's base URL: plain HTTP only when --oci-plain-http names it. */
export function registryBaseUrl(reference: OciReference, plainHttp: readonly string[]): string {
  return `${plainHttp.includes(reference.registry) ? "http" : "https"}://${reference.registry}`;
}
