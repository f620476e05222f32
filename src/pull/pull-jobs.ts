// The table of pull jobs, one per model at most.
import { ModelCacheError } from "../errors.js";
import type { ModelRecord } from "../registry/model-record.js";
import type { ArtifactSource } from "../sources/artifact-source.js";
import { PullJob, type PullJobSettings } from "./pull-job.js";

export class PullJobs {
  private readonly jobs = new Map<string, PullJob>();

  constructor(private readonly settings: PullJobSettings) {}

  /** The model's job while it runs or waits; a finished one (still settling) is not found, so a new Pull starts afresh. */
  find(name: string): PullJob | undefined {
    const job = this.jobs.get(name);
    return job?.state === "finished" ? undefined : job;
  }

  /**
   * Refuses `operation` (DropCache, UnregisterModel) while the model has a
   * pull queued or running: the change would race the pull, which could then
   * install after it. Refusing keeps another client's pull intact; that
   * client decides whether to cancel it. A job already moving its install
   * into place is not refused against: the operation waits for the model's
   * lock, and runs on the install the job leaves.
   */
  refuseWhilePulling(name: string, operation: string): void {
    const job = this.find(name);
    if (!job?.racesChanges) return;
    throw new ModelCacheError(
      "failed_precondition",
      `a pull of model '${name}' is ${job.state} (from ${job.source.description}): ${operation} would race it; wait for it to end, or cancel it (the clients attached to it cancel their Pull calls; a detached pull runs to its end), then call ${operation} again`,
    );
  }

  start(model: ModelRecord, source: ArtifactSource, force: boolean): PullJob {
    const job = new PullJob(this.settings, model, source, force);
    this.jobs.set(model.name, job);
    void job.done.finally(() => {
      if (this.jobs.get(model.name) === job) this.jobs.delete(model.name);
    });
    return job;
  }

  count(state: PullJob["state"]): number {
    let n = 0;
    for (const job of this.jobs.values()) if (job.state === state) n += 1;
    return n;
  }

  /** Cancels every job and resolves once each has cleaned up. */
  async abortAll(reason: unknown): Promise<void> {
    const jobs = [...this.jobs.values()];
    for (const job of jobs) job.abort(reason);
    await Promise.all(jobs.map((job) => job.done));
  }
}
