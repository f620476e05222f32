// mocha's spec reporter, closed by one line CI reads: "N passed, N failed, N skipped".
const { Spec } = require("mocha").reporters;
const { EVENT_RUN_END } = require("mocha").Runner.constants;

class SummaryReporter extends Spec {
  constructor(runner, options) {
    super(runner, options);
    runner.once(EVENT_RUN_END, () => {
      const { passes, failures, pending } = runner.stats;
      process.stdout.write(`\n${passes} passed, ${failures} failed, ${pending} skipped\n`);
    });
  }
}

module.exports = SummaryReporter;
