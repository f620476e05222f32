// Live progress for `modelcache pull` on a terminal (cli-progress): one bar
// for the whole pull (bytes, rate, time left) and one per file in flight,
// redrawn in place, ending in the same summary as the plain output.
import { MultiBar, type SingleBar, Presets } from "cli-progress";
import type { PullResponse } from "../../generated/modelcache/v1/model_cache.js";

export class PullProgress {
  private readonly bars = new MultiBar(
    {
      format: "{label} [{bar}] {percentage}% | {done} / {size} | {rate} | ETA {eta_formatted}",
      hideCursor: true,
      clearOnComplete: false,
      stopOnComplete: false,
      barsize: 28,
      fps: 10,
      autopadding: true,
    },
    Presets.shades_classic,
  );
  private overall: SingleBar | undefined;
  private readonly files = new Map<string, SingleBar>();
  private readonly done = new Map<string, number>();
  private totalBytes = 0;
  private readonly started = performance.now();

  constructor(private readonly format: (bytes: number) => string) {}

  update(event: PullResponse): void {
    if (event.started) {
      this.totalBytes = event.started.totalBytes;
      this.overall = this.bars.create(this.totalBytes || 1, 0, this.payload("total", 0, this.totalBytes));
    }
    if (event.fileStarted) {
      const { path, sizeBytes } = event.fileStarted;
      this.files.set(path, this.bars.create(sizeBytes || 1, 0, this.payload(path, 0, sizeBytes)));
    }
    if (event.fileProgress) {
      const p = event.fileProgress;
      this.done.set(p.path, p.bytesDone);
      this.files.get(p.path)?.update(p.bytesDone, this.payload(p.path, p.bytesDone, p.sizeBytes));
    }
    if (event.fileCompleted) {
      const { path, sizeBytes } = event.fileCompleted;
      this.done.set(path, sizeBytes);
      const bar = this.files.get(path);
      if (bar) {
        this.bars.remove(bar);
        this.files.delete(path);
      }
    }
    let total = 0;
    for (const bytes of this.done.values()) total += bytes;
    // an OCI archive's transfer counts its blob; the files it unpacks are then
    // completed with their own sizes, bytes the pull's total never held
    total = Math.min(total, this.totalBytes);
    this.overall?.update(total, this.payload("total", total, this.totalBytes));
  }

  stop(): void {
    this.bars.stop();
  }

  private payload(label: string, done: number, size: number): Record<string, string> {
    const seconds = (performance.now() - this.started) / 1000;
    const shown = label.length > 32 ? `...${label.slice(-29)}` : label;
    return { label: shown, done: this.format(done), size: this.format(size), rate: `${this.format(seconds > 0 ? done / seconds : 0)}/s` };
  }
}
