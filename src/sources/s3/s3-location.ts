// An s3:// source as a bucket and a key prefix. The prefix is a directory:
// "s3://models/minilm" holds the keys under "minilm/", never "minilm-v2/".
import { ModelCacheError, quote } from "../../errors.js";

export interface S3Location {
  bucket: string;
  /** "" for the whole bucket, else ending in '/' */
  prefix: string;
}

const LOCATION = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/;

export function parseS3Location(source: string): S3Location {
  const match = LOCATION.exec(source);
  if (!match) throw new ModelCacheError("invalid_argument", `model.source ${quote(source)} is not an s3:// location such as 's3://bucket/prefix'`);
  const path = (match[2] ?? "").replace(/^\/+|\/+$/g, "");
  return { bucket: match[1]!, prefix: path === "" ? "" : `${path}/` };
}
