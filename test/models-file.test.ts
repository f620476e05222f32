import { expect } from "chai";
import { parseModelsFile } from "../src/models-file/parse-models-file.js";
import { ModelCacheError } from "../src/errors.js";
import fc from "fast-check";
import { stringify } from "yaml";

function parseError(text: string): string {
  try {
    parseModelsFile(text, "models.yaml");
  } catch (err) {
    expect(err).to.be.instanceOf(ModelCacheError);
    expect((err as ModelCacheError).kind).to.equal("invalid_argument");
    return (err as Error).message;
  }
  throw new Error("expected the file to be refused");
}

describe("reading a models file", () => {
  it("reads snake_case and lowerCamelCase keys, and enums as full names or short words with _ or -", () => {
    const specs = parseModelsFile(
      [
        "models:",
        "  - name: minilm",
        "    source: sentence-transformers/all-MiniLM-L6-v2",
        "    revision: main",
        "    task: TASK_EMBEDDING",
        "    dimensions: 384",
        "    pull_policy: PULL_POLICY_ALWAYS",
        "    credential_alias: hf",
        "  - name: bge",
        "    source: BAAI/bge-small-en-v1.5",
        "    revision: v1",
        "    task: embedding",
        "    dimensions: '512'",
        "    pullPolicy: if-missing",
        "    trustPolicy: allow_remote_code",
        "    acknowledgeRemoteCodeRisk: true",
        "    include: ['*.safetensors']",
        "  - name: e5",
        "    source: intfloat/e5-small",
        "    revision: main",
        "    task: embedding",
        "    dimensions: 8",
        "    pull_policy: never",
      ].join("\n"),
      "models.yaml",
    );
    expect(specs.map((s) => [s.name, s.pullPolicy, s.trustPolicy, s.dimensions])).to.deep.equal([
      ["minilm", "always", "disabled", 384],
      ["bge", "if_missing", "allow_remote_code", 512],
      ["e5", "never", "disabled", 8],
    ]);
    expect(specs[0]!.credentialAlias).to.equal("hf");
    expect(specs[1]!.include).to.deep.equal(["*.safetensors"]);
  });

  it("reads JSON", () => {
    const specs = parseModelsFile(JSON.stringify({ models: [{ name: "a", source: "o/a", revision: "main", task: "TASK_EMBEDDING", dimensions: 3, engine: "ENGINE_CANDLE" }] }), "models.json");
    expect(specs.map((s) => s.name)).to.deep.equal(["a"]);
  });

  it("reads 'models: []' as no models, and refuses an empty file or a bare 'models:' (a file caught half-written)", () => {
    expect(parseModelsFile("models: []\n", "models.yaml")).to.deep.equal([]);
    expect(parseError("")).to.equal("models file models.yaml: the file is empty: to remove every model the file manages, write 'models: []'");
    expect(parseError("# nothing yet\n")).to.include("write 'models: []'");
    expect(parseError("models:\n")).to.match(/^models file models\.yaml:1: 'models' is empty/);
  });

  it("refuses an unknown key, naming the file, the line and the key", () => {
    const message = parseError("models:\n  - name: a\n    source: o/a\n    sorce: o/b\n    dimensions: 3\n");
    expect(message).to.match(/^models file models\.yaml:4: models\[0\]: unknown key 'sorce'/);
  });

  it("refuses a key that looks like a secret, and says to use credential_alias without echoing the value", () => {
    const message = parseError("models:\n  - name: a\n    hf_token: hf_SECRETVALUE\n");
    expect(message).to.include("models.yaml:3").and.include("credential_alias").and.include("PutSecret");
    expect(message).not.to.include("SECRETVALUE");
  });

  it("refuses a field the registry would refuse, naming the model and the field's line", () => {
    const message = parseError("models:\n  - name: a\n    source: o/a\n    revision: main\n    task: embedding\n    dimensions: 0\n");
    expect(message).to.match(/^models file models\.yaml:6: models\[0\] \(a\): dimensions must be between 1 and 65536/);
  });

  it("reads the fleet file of docs/sources.md: revision and task default as 'models register' defaults them", () => {
    const [fleet, hub] = parseModelsFile(
      [
        "models:",
        "  - name: minilm",
        "    source: s3://models/minilm",
        "    credential_alias: models-bucket",
        "    dimensions: 384",
        "    pull_policy: always",
        "  - name: bge",
        "    source: BAAI/bge-small-en-v1.5",
        "    dimensions: 384",
      ].join("\n"),
      "models.yaml",
    );
    expect(fleet).to.include({ name: "minilm", source: "s3://models/minilm", revision: "", task: "embedding", pullPolicy: "always" });
    expect(hub).to.include({ name: "bge", revision: "main", task: "embedding" });
  });

  it("reports every mistake of the file in one run, each with its line", () => {
    const message = parseError(
      [
        "models:",
        "  - name: a",
        "    source: o/a",
        "    dimensions: 0",
        "    pull_policy: sometimes",
        "  - name: b",
        "    source: 'not a repo'",
        "    dimensions: 3",
        "    colour: blue",
        "  - name: c",
        "    source: o/c",
        "    dimensions: 70000",
        "    include: ['']",
      ].join("\n"),
    );
    expect(message).to.match(/^models file models\.yaml: 6 mistakes/);
    for (const line of [
      "models file models.yaml:5: models[0].pull_policy has an unknown value",
      "models file models.yaml:4: models[0] (a): dimensions must be between",
      "models file models.yaml:9: models[1]: unknown key 'colour'",
      "models file models.yaml:7: models[1] (b): source 'not a repo'",
      "models file models.yaml:12: models[2] (c): dimensions must be between",
      "models file models.yaml:13: models[2] (c): include[0]",
    ]) {
      expect(message).to.include(`\n${line}`);
    }
  });

  it("refuses an unknown enum word, listing the accepted ones", () => {
    const message = parseError("models:\n  - name: a\n    source: o/a\n    revision: main\n    task: embedding\n    dimensions: 3\n    pull_policy: sometimes\n");
    expect(message).to.include("models.yaml:7").and.include("pull_policy").and.include("if-missing (PULL_POLICY_IF_MISSING)");
  });

  it("refuses a name listed twice, and a field given in both spellings", () => {
    const spec = "source: o/a, revision: main, task: embedding, dimensions: 3";
    expect(parseError(`models:\n  - {name: a, ${spec}}\n  - {name: a, ${spec}}\n`)).to.match(/models\.yaml:3: models\[1\] \(a\): the name is also used by models\[0\]/);
    expect(parseError(`models:\n  - {name: a, ${spec}, pull_policy: never,\n     pullPolicy: always}\n`)).to.match(/models\.yaml:3: .*given twice/);
  });

  it("refuses text that is neither YAML nor JSON, naming the line", () => {
    expect(parseError("models:\n  - name: a\n    name: b\n")).to.match(/^models file models\.yaml:3: not valid YAML or JSON \(Map keys must be unique\)/);
  });

  it("refuses a key named like a property every object has (valueOf, constructor, toString) as an unknown key", () => {
    for (const key of ["valueOf", "constructor", "toString", "hasOwnProperty"]) {
      expect(parseError(`models:\n  - ${key}: 0\n`), key).to.include(`models.yaml:2: models[0]: unknown key '${key}'`);
    }
  });

  it("refuses a top-level key other than models", () => {
    expect(parseError("modles: []\n")).to.match(/^models file models\.yaml:1: unknown key 'modles'/);
  });

  it("answers any text, and any YAML value under models, with specs or a refusal naming the file", () => {
    const refusalOrSpecs = (text: string) => {
      try {
        return Array.isArray(parseModelsFile(text, "models.yaml"));
      } catch (err) {
        return err instanceof ModelCacheError && err.kind === "invalid_argument" && err.message.startsWith("models file models.yaml");
      }
    };
    fc.assert(fc.property(fc.string({ unit: "binary", maxLength: 200 }), refusalOrSpecs), { numRuns: 300 });
    fc.assert(fc.property(fc.jsonValue({ maxDepth: 4 }), (value) => refusalOrSpecs(stringify({ models: value }))), { numRuns: 300 });
    fc.assert(
      fc.property(fc.dictionary(fc.constantFrom("name", "source", "revision", "task", "dimensions", "pullPolicy", "pull_policy", "include", "x"), fc.jsonValue({ maxDepth: 2 })), (model) =>
        refusalOrSpecs(stringify({ models: [model] })),
      ),
      { numRuns: 300 },
    );
  });
});
