// Log lines for pull jobs: one when a job starts its transfer (source, files,
// bytes) and one when it ends (result, bytes, time, rate, and for a failed or
// cancelled job the gRPC status its clients get and why), whether or not a
// client is still attached. Messages are the errors' own, which never hold a
// secret.
import { status } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { toServiceError } from "../grpc/errors.js";
import { ModelCacheError } from "../errors.js";
import type { PullRecorder, PullResult } from "../pull/pull-job.js";

export class PullLog implements PullRecorder {
  constructor(private readonly logger: Logger) {}

  pullStarted(model: string, started: { source: string; fileCount: number; totalBytes: number }): void {
    this.logger.info({ model, source: started.source, files: started.fileCount, bytes: started.totalBytes }, "pull started");
  }

  pullEnded(model: string, ended: { result: PullResult; bytes: number; seconds: number; reusedBytes: number; peerBytes: number; error?: unknown }): void {
    const fields = {
      model,
      result: ended.result,
      bytes: ended.bytes,
      // taken from the content store: neither fetched nor written
      reusedBytes: ended.reusedBytes,
      // fetched from peer servers (--peers) and verified, instead of from the source
      peerBytes: ended.peerBytes,
      seconds: Number(ended.seconds.toFixed(3)),
      bytesPerSecond: ended.seconds > 0 ? Math.round(ended.bytes / ended.seconds) : 0,
      ...(ended.error === undefined ? {} : { code: status[toServiceError(ended.error).code], error: describe(ended.error) }),
    };
    if (ended.result === "failed") this.logger.warn(fields, "pull failed");
    else this.logger.info(fields, ended.result === "ok" ? "pull finished" : "pull cancelled");
  }
}

function describe(error: unknown): string {
  if (error instanceof ModelCacheError) return `${error.kind}: ${error.message}`;
  return error instanceof Error ? error.message : String(error);
}
