// A forced pull's comparison of a file's bytes, fetched again, with the
// stored copy (download-matching.ts), against the fake hub on loopback and a
// real file: the answer at each place a byte can differ, the chunks sent
// straddling the blocks the stored copy is read in.
import { mkdtemp, open, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { BLOCK_BYTES } from "../src/cache/staged-write.js";
import { Connections } from "../src/sources/hub/connections.js";
import { downloadMatching } from "../src/sources/hub/download-matching.js";
import { HubHttp } from "../src/sources/hub/hub-http.js";
import { FakeHub } from "./support/fake-hub.js";
import { patternedBytes } from "./support/source-dir.js";
import { FIXTURE_DIR } from "./support/test-server.js";

const REPO = "acme/compared";
const PATH = "weights/model.safetensors";
const SIZE = 3 * BLOCK_BYTES + 123;
const content = patternedBytes(SIZE);

describe("a forced pull's comparison with the stored copy", () => {
  let hub: FakeHub;
  let dir: string;
  let http: HubHttp;
  let storedPath: string;
  before(async () => {
    hub = await FakeHub.serve(REPO, FIXTURE_DIR, { [PATH]: content });
    // an odd size: every chunk received straddles a block of the stored copy somewhere
    hub.chunkBytes = 100_003;
    http = new HubHttp({ baseUrl: hub.url, attempts: 1 });
  });
  after(async () => {
    await hub.close();
  });
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "modelcache-matching-"));
    storedPath = join(dir, "stored");
    await writeFile(storedPath, content);
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Whether the hub's bytes match the stored copy, fetched whole (`inRanges` false) or in ranges. */
  const matches = async (inRanges: boolean): Promise<{ same: boolean; counted: number }> => {
    const stored = await open(storedPath, "r");
    let counted = 0;
    try {
      const same = await downloadMatching(
        {
          http,
          url: http.url(`${REPO}/resolve/${hub.commit}/${PATH}`),
          path: PATH,
          sizeBytes: SIZE,
          sha256: hub.file(PATH).sha256,
          signal: new AbortController().signal,
          onBytes: (bytes) => {
            counted += bytes;
          },
        },
        stored,
        { parallelRangeMinBytes: inRanges ? 1 : SIZE + 1, connections: new Connections(4, Infinity) },
      );
      return { same, counted };
    } finally {
      await stored.close();
    }
  };

  /** The stored copy with the byte at `position` changed. */
  const changeStoredAt = async (position: number) => {
    const handle = await open(storedPath, "r+");
    try {
      await handle.write(Buffer.from([content[position]! ^ 0xff]), 0, 1, position);
    } finally {
      await handle.close();
    }
  };

  for (const inRanges of [false, true]) {
    const how = inRanges ? "in ranges" : "in one stream";
    it(`${how}: the same bytes match, each byte counted once`, async () => {
      const asked = hub.contentRequests(PATH).length;
      const { same, counted } = await matches(inRanges);
      expect(same).to.equal(true);
      expect(counted).to.equal(SIZE);
      const ranges = hub.contentRequests(PATH).slice(asked).filter((r) => r.status === 206);
      expect(ranges.length, "ranges asked").to.equal(inRanges ? 4 : 1);
    });

    for (const position of [0, BLOCK_BYTES - 1, BLOCK_BYTES, 2 * BLOCK_BYTES + 50_000, SIZE - 1]) {
      it(`${how}: a stored byte changed at ${position} does not match`, async () => {
        await changeStoredAt(position);
        expect((await matches(inRanges)).same).to.equal(false);
      });
    }

    it(`${how}: a stored copy a byte short does not match`, async () => {
      await truncate(storedPath, SIZE - 1);
      expect((await matches(inRanges)).same).to.equal(false);
    });

    it(`${how}: a stored copy of zeros after its first block does not match`, async () => {
      await writeFile(storedPath, content.subarray(0, BLOCK_BYTES));
      await truncate(storedPath, SIZE);
      expect((await matches(inRanges)).same).to.equal(false);
    });
  }
});
