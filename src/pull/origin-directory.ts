// Where a pull the server makes on its own (ResolveModel's, auto-repair's)
// installs from: the install's origin. A model installed from a local
// directory is pulled again from that directory, never from its hub or S3
// source, which only a Pull that asks for it may bring in (a local fine-tune
// is never silently swapped for the upstream model).
import { stat } from "node:fs/promises";
import { ModelCacheError, errorCode, filesystemError, quote } from "../errors.js";
import type { ModelRecord } from "../registry/model-record.js";
import type { Runtime } from "../runtime.js";

/**
 * The directory to pull `model` from again, or undefined to pull from its own
 * source. FAILED_PRECONDITION naming the directory when it came from one that
 * is gone or that --fixture-root no longer allows.
 */
export async function originDirectory(runtime: Pick<Runtime, "fixtureDir" | "fixtureRoots">, model: ModelRecord): Promise<string | undefined> {
  const notFromSource = `it is not pulled from its source ${quote(model.source)} instead unless a Pull asks for that`;
  const fixes = "Pull it with fixture_dir naming a directory to install from, or without fixture_dir to install from its source";
  const dir = model.sourceDir;
  if (dir === undefined) {
    // an earlier version recorded no directory; the server's --fixture-dir is where its pulls came from by default
    if (model.install?.resolvedCommit === "" && runtime.fixtureDir === undefined) {
      throw new ModelCacheError("failed_precondition", `model '${model.name}' was installed from a local directory this server did not record, and ${notFromSource}: ${fixes}`);
    }
    return undefined;
  }
  let admitted: string;
  try {
    admitted = await runtime.fixtureRoots.admit(dir, "the directory it was installed from");
  } catch (err) {
    if (!(err instanceof ModelCacheError)) throw err;
    throw new ModelCacheError("failed_precondition", `model '${model.name}' was installed from the local directory '${dir}', which this server no longer allows (${err.message}), and ${notFromSource}: ${fixes}`, { cause: err });
  }
  const info = await stat(admitted).catch((err: unknown) => {
    // gone: said below; any other failure to look is an error of its own
    if (errorCode(err) === "ENOENT" || errorCode(err) === "ENOTDIR") return undefined;
    throw filesystemError("look at the directory the model was installed from", admitted, err);
  });
  if (!info?.isDirectory()) {
    throw new ModelCacheError("failed_precondition", `model '${model.name}' was installed from the local directory '${dir}', which no longer exists, and ${notFromSource}: put the directory back, or ${fixes}`);
  }
  return admitted;
}
