// Kernel notifications (inotify, through fs.watch) on an install's directories
// and files, so that an install inspected before can be answered without a
// stat per file while nothing in it changed. A directory's watch hears
// entries added, removed or renamed in it; a file's watch is on its inode,
// and hears writes, truncation, chmod and link-count changes made through any
// of its paths (the content store's, the cache view's, another install's).
// Any notification, or any failure to watch, ends the trust, and so does
// time: a watch closes itself after its lifetime, since the kernel drops
// notifications when its queue overflows (libuv drops the overflow notice
// too), and a watch nobody asks about holds kernel resources for nothing.
import { type FSWatcher, watch } from "node:fs";
import { errorCode } from "../errors.js";

/**
 * Watches held at once, across installs: inotify's per-user limit is shared
 * with every other program of the user (8192 on older kernels), and past it
 * an install is checked by stat as before.
 */
const MOST_WATCHES = 4096;
let watches = 0;
/** After the kernel or the budget refused a watch, no install is watched for a while: each try would cost a system call per path. */
const REFUSED_BACKOFF_MS = 60_000;
let refusedUntil = 0;

/** Whether watches were refused lately (the caller then checks by stat). */
export function watchesRefused(): boolean {
  return performance.now() < refusedUntil;
}

export interface InstallWatch {
  /** true until a notification arrives for any watched path, a watch fails, or the lifetime ends */
  readonly intact: boolean;
  close(): void;
}

/**
 * Watches every path in `paths` for `lifetimeMs` at most; undefined when they
 * cannot all be watched (too many, or the kernel refused one), in which case
 * nothing stays watched.
 */
export function watchInstall(paths: string[], lifetimeMs: number): InstallWatch | undefined {
  if (watches + paths.length > MOST_WATCHES) {
    refusedUntil = performance.now() + REFUSED_BACKOFF_MS;
    return undefined;
  }
  const watchers: FSWatcher[] = [];
  let closed = false;
  let expiry: NodeJS.Timeout | undefined;
  const close = () => {
    if (closed) return;
    closed = true;
    clearTimeout(expiry);
    watches -= watchers.length;
    for (const watcher of watchers) watcher.close();
  };
  try {
    for (const path of paths) {
      // not persistent: a watch never keeps the process alive
      const watcher = watch(path, { persistent: false }, close);
      // an error (the watched path went away) is a change: the next inspection stats again
      watcher.on("error", close);
      watchers.push(watcher);
      watches += 1;
    }
  } catch (err) {
    // ENOSPC (inotify's watch limit), EMFILE, or a path gone since it was listed:
    // not an error of the inspection, which checks by stat instead
    close();
    if (errorCode(err) !== "ENOENT") refusedUntil = performance.now() + REFUSED_BACKOFF_MS;
    return undefined;
  }
  expiry = setTimeout(close, lifetimeMs);
  // a watch never keeps the process alive
  expiry.unref();
  return {
    get intact() {
      return !closed;
    },
    close,
  };
}
