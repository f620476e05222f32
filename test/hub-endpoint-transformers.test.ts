// transformers.js (@huggingface/transformers), a client nobody here wrote, loading
// a tokenizer and a config through the hub endpoint with nothing but env.remoteHost changed.
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AutoConfig, AutoTokenizer, env } from "@huggingface/transformers";
import { expect } from "chai";
import { createHash } from "node:crypto";
import { Metadata } from "@grpc/grpc-js";
import { AccessTokens } from "../src/auth/access-tokens.js";
import { FakeHub } from "./support/fake-hub.js";
import { CacheStatus, PullPolicy } from "../generated/modelcache/v1/model_cache.js";
import { type TestServer, call, modelSpec, pull, pullOk, startTestServer } from "./support/test-server.js";

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

/** A test hub serving the tiny BERT, and a server with the hub endpoint on which it is registered and installed. */
async function serveTinyBert(tokens?: AccessTokens): Promise<{ hub: FakeHub; t: TestServer; base: string; dir: string; close(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), "modelcache-transformers-"));
  await mkdir(join(dir, "source"));
  const hub = await FakeHub.serve(REPO, join(dir, "source"), tinyBert());
  const t = await startTestServer({ hubUrl: hub.url, hubListen: "127.0.0.1:0", metricsListen: "127.0.0.1:0", authTokens: tokens });
  const metadata = new Metadata();
  if (tokens) metadata.set("authorization", `Bearer ${ADMIN}`);
  await call(t.client, "registerModel", { model: modelSpec({ name: "tiny-bert", source: REPO, dimensions: 8, pullPolicy: PullPolicy.PULL_POLICY_IF_MISSING }) }, metadata);
  expect((await pull(t.client, { name: "tiny-bert" }, { metadata })).error).to.equal(undefined);
  return {
    hub,
    t,
    dir,
    base: `http://${t.server.hubAddress}`,
    async close() {
      await t.close();
      await hub.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

const ADMIN = "mct_admin-token";
const CONSUMER = "mct_consumer-token";
const digest = (token: string) => createHash("sha256").update(token).digest("hex");

/**
 * Hooks that point transformers.js at the endpoint for each test: env.remoteHost, no local
 * models, no browser cache, a fresh file cache; and record every URL fetched meanwhile,
 * through env.fetch (wrapping `inner`, the test's choice) or anything else's globalThis.fetch.
 */
function useEndpoint(s: () => { base: string; dir: string }, inner: () => typeof fetch = () => originalFetch): { fetched: string[] } {
  const saved = { ...env };
  const state = { fetched: [] as string[] };
  beforeEach(async () => {
    const cacheDir = await mkdtemp(join(s().dir, "transformers-cache-"));
    Object.assign(env, { remoteHost: `${s().base}/`, allowLocalModels: false, useBrowserCache: false, useFSCache: true, cacheDir });
    expect(env.remotePathTemplate).to.equal("{model}/resolve/{revision}/");
    state.fetched = [];
    const record =
      (through: typeof fetch): typeof fetch =>
      (input, init) => {
        state.fetched.push(input instanceof Request ? input.url : String(input));
        return through(input, init);
      };
    env.fetch = record(inner());
    globalThis.fetch = record(originalFetch);
  });
  afterEach(() => {
    globalThis.fetch = originalFetch;
    Object.assign(env, saved);
  });
  return {
    get fetched() {
      return state.fetched;
    },
  };
}

const SENTENCE = "Hello, the cache serves embedding models! Zebras";
const SENTENCE_IDS = ["[CLS]", "hello", ",", "the", "cache", "serves", "em", "##bed", "##ding", "model", "##s", "!", "[UNK]", "[SEP]"].map(id);

describe("the hub endpoint with transformers.js (@huggingface/transformers) as the client", () => {
  let s: Awaited<ReturnType<typeof serveTinyBert>>;
  before(async () => {
    s = await serveTinyBert();
  });
  after(async () => {
    await s?.close();
  });
  const recorded = useEndpoint(() => s);

  /** Asserts that every request went to the endpoint, and that the endpoint saw each of them. */
  async function expectOnlyTheEndpoint(before: { endpoint: number; hub: number }, installed = true) {
    globalThis.fetch = originalFetch;
    expect(recorded.fetched).to.not.be.empty;
    for (const url of recorded.fetched) expect(url.startsWith(`${s.base}/${REPO}/resolve/main/`), url).to.equal(true);
    expect((await endpointRequests(s.t)) - before.endpoint).to.equal(recorded.fetched.length);
    // the installed model was served as it is: the endpoint asked the hub nothing
    if (installed) expect(s.hub.requests.length).to.equal(before.hub);
  }
  const counts = async () => ({ endpoint: await endpointRequests(s.t), hub: s.hub.requests.length });

  it("loads the tokenizer through the endpoint, and its ids for a sentence are the vocabulary's", async () => {
    const before = await counts();
    const tokenizer = await AutoTokenizer.from_pretrained(REPO);
    const ids = tokenizer.encode(SENTENCE);
    expect(ids).to.deep.equal(SENTENCE_IDS);
    expect(tokenizer.decode(ids, { skip_special_tokens: true })).to.equal("hello, the cache serves embedding models!");
    await expectOnlyTheEndpoint(before);
    expect(recorded.fetched).to.include.members([`${s.base}/${REPO}/resolve/main/tokenizer.json`, `${s.base}/${REPO}/resolve/main/tokenizer_config.json`]);
  });

  it("loads the config through the endpoint", async () => {
    const before = await counts();
    const config = (await AutoConfig.from_pretrained(REPO)) as unknown as Record<string, unknown>;
    expect(config).to.include({ model_type: "bert", vocab_size: VOCAB.length, hidden_size: 8, num_attention_heads: 2 });
    await expectOnlyTheEndpoint(before);
    expect(recorded.fetched).to.include(`${s.base}/${REPO}/resolve/main/config.json`);
  });

  // last: it drops the install the tests above are served from
  it("loads the tokenizer of a model whose install was dropped, the endpoint pulling it again on the first request", async () => {
    await call(s.t.client, "dropCache", { name: "tiny-bert", force: false });
    const before = await counts();
    const tokenizer = await AutoTokenizer.from_pretrained(REPO);
    expect(tokenizer.encode(SENTENCE)).to.deep.equal(SENTENCE_IDS);
    await expectOnlyTheEndpoint(before, false);
    // the pull the endpoint started installs the model again (a Pull joins it), the hub sending tokenizer.json once
    await pullOk(s.t.client, { name: "tiny-bert" });
    expect((await call(s.t.client, "inspectCache", { name: "tiny-bert", deep: false })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    expect(s.hub.requests.slice(before.hub).filter((r) => s.hub.contentRequests("tokenizer.json").includes(r))).to.have.length(1);
  });
});

describe("the hub endpoint with tokens, with transformers.js as the client", () => {
  let s: Awaited<ReturnType<typeof serveTinyBert>>;
  let token: string | undefined;
  before(async () => {
    const tokens = AccessTokens.parse(
      JSON.stringify({
        tokens: [
          { name: "ops", sha256: digest(ADMIN), role: "admin" },
          { name: "svc", sha256: digest(CONSUMER), role: "consumer" },
        ],
      }),
    );
    s = await serveTinyBert(tokens);
  });
  after(async () => {
    await s?.close();
  });
  const savedHfToken = process.env.HF_TOKEN;
  afterEach(() => {
    token = undefined;
    if (savedHfToken === undefined) delete process.env.HF_TOKEN;
    else process.env.HF_TOKEN = savedHfToken;
  });
  // env.fetch, the one place a consumer can add its token for a host other than huggingface.co
  const recorded = useEndpoint(
    () => s,
    () => (input, init) => {
      const headers = new Headers(init?.headers);
      if (token) headers.set("authorization", `Bearer ${token}`);
      return originalFetch(input, { ...init, headers });
    },
  );

  it("is refused (401) without a token: transformers.js sends HF_TOKEN only to huggingface.co", async () => {
    process.env.HF_TOKEN = CONSUMER;
    const before = await endpointRequests(s.t);
    let failure: unknown;
    await AutoTokenizer.from_pretrained(REPO).catch((error: unknown) => (failure = error));
    expect(failure).to.be.instanceOf(Error);
    expect(String(failure)).to.include("Unauthorized");
    globalThis.fetch = originalFetch;
    const text = await (await originalFetch(`http://${s.t.server.metricsAddress}/metrics`)).text();
    expect(text).to.match(/modelcache_hub_requests_total\{route="resolve",code="401"\} [1-9]/);
    expect((await endpointRequests(s.t)) - before).to.equal(recorded.fetched.length);
  });

  it("loads the tokenizer with a consumer's token that an env.fetch adds", async () => {
    token = CONSUMER;
    const tokenizer = await AutoTokenizer.from_pretrained(REPO);
    expect(tokenizer.encode(SENTENCE)).to.deep.equal(SENTENCE_IDS);
    for (const url of recorded.fetched) expect(url.startsWith(`${s.base}/${REPO}/resolve/main/`), url).to.equal(true);
  });
});
