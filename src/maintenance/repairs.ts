// Auto-repair (--auto-repair, on by default): a model whose install holds
// content that was condemned, whoever found it (a pull, adoption, the
// background verification, a deep InspectCache), is pulled again in the
// background once a running pull of it has ended. How it is pulled (from
// where its install came from) is passed in: maintenance decides when,
// pull/ knows how.
import type { Logger } from "pino";
import type { PullJobs } from "../pull/pull-jobs.js";

/** Told how each repair ended (the server's metrics). */
export interface RepairRecorder {
  repairEnded(model: string, result: "ok" | "failed"): void;
}

/** Pulls a model marked corrupt again: "skipped" when it needs no repair or cannot have one here (said in the log). */
export type RepairModel = (name: string, signal: AbortSignal) => Promise<"repaired" | "skipped">;

export class Repairs {
  private readonly controller = new AbortController();
  private readonly running = new Set<Promise<void>>();
  /** models whose repair is under way: a condemnation its own pull makes does not queue another */
  private readonly repairing = new Set<string>();

  constructor(
    private readonly pulls: Pick<PullJobs, "find">,
    private readonly repairModel: RepairModel,
    private readonly logger: Logger,
    /** false with --no-auto-repair: the models stay UNHEALTHY until pulled again */
    private readonly enabled: boolean,
    private readonly recorders: RepairRecorder[] = [],
  ) {}

  /** Repairs `name` in the background; never throws (the outcome is logged and counted). */
  repair(name: string): void {
    if (!this.enabled || this.controller.signal.aborted || this.repairing.has(name)) return;
    const signal = this.controller.signal;
    this.repairing.add(name);
    const work = (async () => {
      // a pull of it that is running may have linked the content before it was condemned: it ends first
      for (let job = this.pulls.find(name); job; job = this.pulls.find(name)) await job.done;
      try {
        if ((await this.repairModel(name, signal)) === "skipped") return;
        this.logger.info({ model: name }, "repaired: the model was pulled again and is healthy");
        for (const recorder of this.recorders) recorder.repairEnded(name, "ok");
      } catch (err) {
        if (signal.aborted) return;
        this.logger.warn({ model: name, err }, "the repair pull failed: the model stays UNHEALTHY until it is pulled again");
        for (const recorder of this.recorders) recorder.repairEnded(name, "failed");
      } finally {
        this.repairing.delete(name);
      }
    })();
    this.running.add(work);
    void work.finally(() => this.running.delete(work));
  }

  /** Stops the repairs under way (their pulls are cancelled) and waits for them. */
  async close(): Promise<void> {
    this.controller.abort(new Error("the server is stopping"));
    await Promise.all(this.running);
  }
}
