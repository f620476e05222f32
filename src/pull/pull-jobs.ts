// The table of pull jobs, one per model at most.
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
