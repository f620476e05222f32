// Kernel notifications (inotify, through fs.watch) on an install's directories
// and files, so that an install inspected before can be answered without a
// stat per file while nothing in it changed. A directory's watch hears
// entries added, removed or renamed in it; a file's watch is on its inode,
// and hears writes, truncation, chmod and link-count changes made through any
// of its paths (the content store's, the cache view's, another install's).
// Any notification, or any failure to watch, ends the trust.
import { type FSWatcher, watch } from "node:fs";

/**
 * Watches held at once, across installs: inotify's per-user limit is shared
 * with every other program of the user (8192 on older kernels), and past it
 * an install is checked by stat as before.
 */
const MOST_WATCHES = 4096;
let watches = 0;

export interface InstallWatch {
  /** true until a notification arrives for any watched path (or a watch failed) */
  readonly intact: boolean;
  close(): void;
}

/**
 * Watches every path in `paths`; undefined when they cannot all be watched
 * (too many, or the kernel refused one), in which case nothing stays watched.
 * `onChange` runs once, at the first notification.
 */
export function watchInstall(paths: string[], onChange: () => void): InstallWatch | undefined {
  if (watches + paths.length > MOST_WATCHES) return undefined;
  const watchers: FSWatcher[] = [];
  let intact = true;
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    watches -= watchers.length;
    for (const watcher of watchers) watcher.close();
  };
  const changed = () => {
    if (!intact) return;
    intact = false;
    close();
    onChange();
  };
  try {
    for (const path of paths) {
      // not persistent: a watch never keeps the process alive
      const watcher = watch(path, { persistent: false }, changed);
      // an error (the watched path went away, the inotify queue overflowed) is a change: the next inspection stats again
      watcher.on("error", changed);
      watchers.push(watcher);
      watches += 1;
    }
  } catch {
    // ENOSPC (inotify's watch limit), EMFILE, or a path gone since it was listed:
    // not an error of the inspection, which checks by stat instead
    intact = false;
    close();
    return undefined;
  }
  return {
    get intact() {
      return intact;
    },
    close,
  };
}
