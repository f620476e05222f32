// A short run of the crash torture (npm run torture runs the long one).
import { expect } from "chai";
import { runTorture } from "./torture/torture.js";

describe("crash torture (short run)", function () {
  this.timeout(240_000);

  it("keeps every model at its old state or its new one across SIGKILLs at random moments", async () => {
    const result = await runTorture({ cycles: 4, seed: 20261202 });
    expect(result.cycles).to.equal(4);
    expect(result.violations).to.deep.equal([]);
  });
});
