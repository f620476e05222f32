// Checks at start that the cache root's filesystem has hard links, which
// installs need to share stored content, and names the filesystem if not.
import { randomBytes } from "node:crypto";
import { link, readFile, realpath, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ModelCacheError, errorCode, filesystemError } from "../errors.js";

/** How the probe's files are named, so a cleanup of the ingest dir leaves a starting server's alone. */
export const PROBE_PREFIX = "probe-";

/**
 * Installs share stored content through hard links: a cache root on a
 * filesystem without them (vfat, exfat, some network and FUSE mounts) would
 * fail every pull, so the start fails instead, naming the filesystem.
 */
export async function probeHardLinks(dir: string, cacheRoot: string, linkFile: (existing: string, target: string) => Promise<void> = link): Promise<void> {
  const probe = join(dir, `${PROBE_PREFIX}${randomBytes(6).toString("hex")}`);
  try {
    await writeFile(probe, "");
    await linkFile(probe, `${probe}.link`);
  } catch (err) {
    const code = errorCode(err);
    if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP" && code !== "ENOSYS" && code !== "EXDEV") throw filesystemError("try a hard link in", dir, err);
    throw new ModelCacheError(
      "invalid_argument",
      `the cache root '${cacheRoot}' is on a filesystem without hard links (${await filesystemOf(dir)}; link(2) said ${code}), which installs need to share stored content: choose a --cache-dir on ext4, xfs, btrfs or another filesystem with hard links`,
    );
  } finally {
    await rm(probe, { force: true });
    await rm(`${probe}.link`, { force: true });
  }
}

/** The type of the filesystem mounted at the longest mount point holding `path`, from /proc/self/mounts. */
export async function filesystemOf(path: string): Promise<string> {
  let mounts: string;
  try {
    mounts = await readFile("/proc/self/mounts", "utf8");
  } catch {
    // not Linux, or no /proc: the message goes without the name
    return "filesystem type unknown";
  }
  const real = await realpath(path).catch(() => path);
  let best = { at: "", type: "unknown" };
  for (const line of mounts.split("\n")) {
    const [, rawAt, type] = line.split(" ");
    if (!rawAt || !type) continue;
    const at = rawAt.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
    const inside = real === at || real.startsWith(at.endsWith("/") ? at : `${at}/`);
    if (inside && at.length >= best.at.length) best = { at, type };
  }
  return `${best.type} mounted at '${best.at}'`;
}
