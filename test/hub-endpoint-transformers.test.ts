// transformers.js (@huggingface/transformers), a client nobody here wrote, loading
// a tokenizer and a config through the hub endpoint with nothing but env.remoteHost changed.
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AutoConfig, AutoTokenizer, env } from "@huggingface/transformers";
import { expect } from "chai";
import { FakeHub } from "./support/fake-hub.js";
import { CacheStatus, PullPolicy } from "../generated/modelcache/v1/model_cache.js";
import { type TestServer, call, modelSpec, pullOk, startTestServer } from "./support/test-server.js";

const REPO = "acme/tiny-bert";
const originalFetch = globalThis.fetch;

/** A tiny BERT WordPiece vocabulary: a token's id is its index. */
const VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cache", "serves", "model", "##s", "hello", ",", "!", "em", "##bed", "##ding"];
const id = (token: string) => VOCAB.indexOf(token);
const SPECIAL = new Set(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]);

/** The files of the model, tokenizer.json in the tokenizers library's format. */
function tinyBert(): Record<string, string> {
  const special = (token: string) => ({ SpecialToken: { id: token, type_id: 0 } });
  const tokenizer = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [...SPECIAL].map((content) => ({ id: id(content), content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: { type: "BertNormalizer", clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: "BertPreTokenizer" },
    post_processor: {
      type: "TemplateProcessing",
      single: [special("[CLS]"), { Sequence: { id: "A", type_id: 0 } }, special("[SEP]")],
      pair: [special("[CLS]"), { Sequence: { id: "A", type_id: 0 } }, special("[SEP]"), { Sequence: { id: "B", type_id: 1 } }, { SpecialToken: { id: "[SEP]", type_id: 1 } }],
      special_tokens: Object.fromEntries(["[CLS]", "[SEP]"].map((token) => [token, { id: token, ids: [id(token)], tokens: [token] }])),
    },
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: { type: "WordPiece", unk_token: "[UNK]", continuing_subword_prefix: "##", max_input_chars_per_word: 100, vocab: Object.fromEntries(VOCAB.map((token, i) => [token, i])) },
  };
  const config = { architectures: ["BertModel"], model_type: "bert", vocab_size: VOCAB.length, hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 16, max_position_embeddings: 32, type_vocab_size: 2 };
  const tokenizerConfig = { tokenizer_class: "BertTokenizer", do_lower_case: true, model_max_length: 32, cls_token: "[CLS]", sep_token: "[SEP]", pad_token: "[PAD]", unk_token: "[UNK]", mask_token: "[MASK]" };
  return { "config.json": JSON.stringify(config, null, 2), "tokenizer.json": JSON.stringify(tokenizer, null, 2), "tokenizer_config.json": JSON.stringify(tokenizerConfig, null, 2) };
}

/** The sum of modelcache_hub_requests_total over every route and code. */
async function endpointRequests(t: TestServer): Promise<number> {
  const text = await (await originalFetch(`http://${t.server.metricsAddress}/metrics`)).text();
  return [...text.matchAll(/^modelcache_hub_requests_total\{[^}]*\} (\d+)$/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
}

describe("the hub endpoint with transformers.js (@huggingface/transformers) as the client", () => {
  let dir: string;
  let hub: FakeHub;
  let t: TestServer;
  let base: string;
  const saved = { ...env };
  /** every URL transformers.js (or anything else in the process) fetched while a test ran */
  let fetched: string[];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "modelcache-transformers-"));
    await mkdir(join(dir, "source"));
    hub = await FakeHub.serve(REPO, join(dir, "source"), tinyBert());
    t = await startTestServer({ hubUrl: hub.url, hubListen: "127.0.0.1:0", metricsListen: "127.0.0.1:0" });
    await call(t.client, "registerModel", { model: modelSpec({ name: "tiny-bert", source: REPO, dimensions: 8, pullPolicy: PullPolicy.PULL_POLICY_IF_MISSING }) });
    await pullOk(t.client, { name: "tiny-bert" });
    base = `http://${t.server.hubAddress}`;
  });

  beforeEach(async () => {
    // a fresh file cache per test, no browser cache, no local models: every file comes from remoteHost
    const cacheDir = await mkdtemp(join(dir, "transformers-cache-"));
    Object.assign(env, { remoteHost: `${base}/`, allowLocalModels: false, useBrowserCache: false, useFSCache: true, cacheDir });
    expect(env.remotePathTemplate).to.equal("{model}/resolve/{revision}/");
    fetched = [];
    const record =
      (inner: typeof fetch): typeof fetch =>
      (input, init) => {
        fetched.push(input instanceof Request ? input.url : String(input));
        return inner(input, init);
      };
    env.fetch = record(originalFetch);
    globalThis.fetch = record(originalFetch);
  });

  afterEach(() => {
    globalThis.fetch = originalFetch;
    Object.assign(env, saved);
  });

  after(async () => {
    await t?.close();
    await hub?.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** Asserts that every request went to the endpoint, and that the endpoint saw each of them. */
  async function expectOnlyTheEndpoint(before: { endpoint: number; hub: number }, installed = true) {
    globalThis.fetch = originalFetch;
    expect(fetched).to.not.be.empty;
    for (const url of fetched) expect(url.startsWith(`${base}/${REPO}/resolve/main/`), url).to.equal(true);
    expect((await endpointRequests(t)) - before.endpoint).to.equal(fetched.length);
    // the installed model was served as it is: the endpoint asked the hub nothing
    if (installed) expect(hub.requests.length).to.equal(before.hub);
  }
  const counts = async () => ({ endpoint: await endpointRequests(t), hub: hub.requests.length });

  const SENTENCE = "Hello, the cache serves embedding models! Zebras";
  const SENTENCE_IDS = ["[CLS]", "hello", ",", "the", "cache", "serves", "em", "##bed", "##ding", "model", "##s", "!", "[UNK]", "[SEP]"].map(id);

  it("loads the tokenizer through the endpoint, and its ids for a sentence are the vocabulary's", async () => {
    const before = await counts();
    const tokenizer = await AutoTokenizer.from_pretrained(REPO);
    const ids = tokenizer.encode(SENTENCE);
    expect(ids).to.deep.equal(SENTENCE_IDS);
    expect(tokenizer.decode(ids, { skip_special_tokens: true })).to.equal("hello, the cache serves embedding models!");
    await expectOnlyTheEndpoint(before);
    expect(fetched).to.include.members([`${base}/${REPO}/resolve/main/tokenizer.json`, `${base}/${REPO}/resolve/main/tokenizer_config.json`]);
  });

  it("loads the config through the endpoint", async () => {
    const before = await counts();
    const config = (await AutoConfig.from_pretrained(REPO)) as unknown as Record<string, unknown>;
    expect(config).to.include({ model_type: "bert", vocab_size: VOCAB.length, hidden_size: 8, num_attention_heads: 2 });
    await expectOnlyTheEndpoint(before);
    expect(fetched).to.include(`${base}/${REPO}/resolve/main/config.json`);
  });

  // last: it drops the install the tests above are served from
  it("loads the tokenizer of a model whose install was dropped, the endpoint pulling it again on the first request", async () => {
    await call(t.client, "dropCache", { name: "tiny-bert", force: false });
    const before = await counts();
    const tokenizer = await AutoTokenizer.from_pretrained(REPO);
    expect(tokenizer.encode(SENTENCE)).to.deep.equal(SENTENCE_IDS);
    await expectOnlyTheEndpoint(before, false);
    // the pull the endpoint started installs the model again (a Pull joins it), the hub sending tokenizer.json once
    await pullOk(t.client, { name: "tiny-bert" });
    expect((await call(t.client, "inspectCache", { name: "tiny-bert", deep: false })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    expect(hub.requests.slice(before.hub).filter((r) => hub.contentRequests("tokenizer.json").includes(r))).to.have.length(1);
  });
});
