// Reads a models file (YAML, or JSON, which YAML's parser also reads) into
// validated specs. The whole file is checked before anything may change;
// every mistake in it is reported at once, each naming the file, the line,
// the model and the field. A left-out revision or task gets the default
// `models register` gives it (spec-defaults). Keys are ModelSpec's proto
// JSON names (lowerCamelCase or snake_case); enums are the full name or the
// short lower-case word. Unknown keys are refused: that is how a misspelt
// key, or a secret someone tried to put in the file, is caught.
import { readFile } from "node:fs/promises";
import { LineCounter, type Node, type Pair, isMap, isScalar, isSeq, parseDocument } from "yaml";
import { ModelCacheError, errorCode, quote } from "../errors.js";
import type { ModelSpec, ModelSpecInput } from "../registry/model-record.js";
import { withSpecDefaults } from "./spec-defaults.js";
import { checkModelSpec } from "../registry/validate-model-spec.js";

type Field = keyof ModelSpecInput;

/** ModelSpec's fields by their snake_case name (the proto's). */
const FIELDS: Record<string, Field> = {
  name: "name",
  source: "source",
  revision: "revision",
  task: "task",
  dimensions: "dimensions",
  engine: "engine",
  pull_policy: "pullPolicy",
  trust_policy: "trustPolicy",
  acknowledge_remote_code_risk: "acknowledgeRemoteCodeRisk",
  credential_alias: "credentialAlias",
  include: "include",
  exclude: "exclude",
  pinned: "pinned",
};

/** Each enum's short words (the domain's) by the prefix of its full proto names. */
const ENUMS: Partial<Record<Field, { prefix: string; words: readonly string[] }>> = {
  task: { prefix: "TASK_", words: ["embedding"] },
  engine: { prefix: "ENGINE_", words: ["candle"] },
  pullPolicy: { prefix: "PULL_POLICY_", words: ["never", "if_missing", "always"] },
  trustPolicy: { prefix: "TRUST_POLICY_", words: ["disabled", "allow_remote_code"] },
};

const SECRET_LIKE = /token|password|secret|api_?key|credential(?!_alias)/i;

/** Reads and validates the models file at `path`. */
export async function readModelsFile(path: string): Promise<ModelSpec[]> {
  return parseModelsFile(await readModelsFileText(path), path);
}

/** The text of the models file; a refusal naming it when it cannot be read. */
export async function readModelsFileText(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    const reason = errorCode(err) === "ENOENT" ? "it does not exist" : (errorCode(err) ?? (err as Error).message);
    throw new ModelCacheError("invalid_argument", `models file ${path}: cannot be read (${reason}); check --models-file`, { cause: err });
  }
}

/** Validates the text of a models file; `file` names it in errors. */
export function parseModelsFile(text: string, file: string): ModelSpec[] {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: true, uniqueKeys: true });
  const at = (node: Node | null | undefined) => (node?.range ? `${file}:${lines.linePos(node.range[0]).line}` : file);
  const fail = (where: string, message: string): never => {
    throw new ModelCacheError("invalid_argument", `models file ${where}: ${message}`);
  };
  const syntax = doc.errors[0];
  if (syntax) fail(`${file}:${syntax.linePos?.[0].line ?? 1}`, `not valid YAML or JSON (${syntax.message.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, "")})`);

  // an empty file, or a bare 'models:', is more often a file caught half-written
  // than a wish to remove every model: that takes an explicit empty list
  const empty = "is empty: to remove every model the file manages, write 'models: []'";
  const root = doc.contents;
  if (root === null || (isScalar(root) && root.value === null)) return fail(file, `the file ${empty}`);
  if (!isMap(root)) return fail(at(root), "must be a mapping with a 'models' list, such as 'models: [{name: minilm, ...}]'");
  let list: Node | null = null;
  for (const pair of root.items as Pair<Node, Node | null>[]) {
    const key = keyOf(pair);
    if (key !== "models") fail(at(pair.key), `unknown key ${quote(key)} at the top: the file holds only 'models', a list of model specs`);
    list = pair.value;
  }
  if (list === null || (isScalar(list) && list.value === null)) return fail(at(root), `'models' ${empty}`);
  if (!isSeq(list)) return fail(at(list), "'models' must be a list of model specs");

  // every mistake in the entries is reported in one run, not one per run
  const problems: string[] = [];
  const note = (where: string, message: string) => problems.push(`models file ${where}: ${message}`);
  const specs: ModelSpec[] = [];
  const seen = new Map<string, number>();
  list.items.forEach((item, index) => {
    const node = item as Node | null;
    const label = `models[${index}]`;
    if (!isMap(node)) return note(at(node), `${label} must be a mapping of ModelSpec fields, such as 'name', 'source' and 'dimensions'`);
    const input: ModelSpecInput = { name: "", source: "", revision: "", task: undefined, dimensions: 0, engine: undefined, pullPolicy: undefined, trustPolicy: undefined, acknowledgeRemoteCodeRisk: false, credentialAlias: "", include: [], exclude: [], pinned: false };
    const lineOf = new Map<Field, string>();
    const unreadable = new Set<Field>();
    for (const pair of node.items as Pair<Node, Node | null>[]) {
      const key = keyOf(pair);
      const field = fieldNamed(key) ?? fieldNamed(snakeCase(key));
      if (field === undefined) {
        const why = SECRET_LIKE.test(key)
          ? "secrets never go in the models file: store the credential with PutSecret ('modelcache secrets put ALIAS') and give its alias as credential_alias"
          : `a model takes ${Object.keys(FIELDS).join(", ")} (snake_case or lowerCamelCase)`;
        note(at(pair.key), `${label}: unknown key ${quote(key)}: ${why}`);
        continue;
      }
      if (lineOf.has(field)) {
        note(at(pair.key), `${label}: ${key} is given twice (snake_case and lowerCamelCase name the same field)`);
        continue;
      }
      lineOf.set(field, at(pair.key));
      try {
        const value = readValue(field, pair.value, (message) => {
          throw new ModelCacheError("invalid_argument", `${label}.${snakeName(field)} ${message}`);
        });
        (input as unknown as Record<string, unknown>)[field] = value;
      } catch (err) {
        if (!(err instanceof ModelCacheError)) throw err;
        note(at(pair.value ?? pair.key), err.message);
        unreadable.add(field);
      }
    }
    const shown = input.name !== "" ? `${label} (${input.name})` : label;
    const { spec, errors } = checkModelSpec(withSpecDefaults(input));
    for (const err of errors) {
      // the validator names the field as model.<snake_case>: point at its line
      const named = /^model\.([a-z_]+)/.exec(err.message)?.[1];
      const field = named === undefined ? undefined : fieldNamed(named);
      // a field that could not be read is refused once, not again as unset
      if (field !== undefined && unreadable.has(field)) continue;
      note(field && lineOf.has(field) ? lineOf.get(field)! : at(node), `${shown}: ${err.message.replace(/^model\./, "")}`);
    }
    if (!spec || unreadable.size > 0) return;
    const earlier = seen.get(spec.name);
    if (earlier !== undefined) return note(at(node), `${shown}: the name is also used by models[${earlier}]; each model is listed once`);
    seen.set(spec.name, index);
    specs.push(spec);
  });
  if (problems.length === 1) throw new ModelCacheError("invalid_argument", problems[0]!);
  if (problems.length > 1) throw new ModelCacheError("invalid_argument", `models file ${file}: ${problems.length} mistakes, each on a line below\n${problems.join("\n")}`);
  return specs;
}

/** The field a key names; only FIELDS' own keys count (a key such as 'valueOf' or 'constructor' names none). */
function fieldNamed(key: string): Field | undefined {
  return Object.hasOwn(FIELDS, key) ? FIELDS[key] : undefined;
}

function keyOf(pair: Pair<Node, Node | null>): string {
  return isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
}

function snakeCase(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

function snakeName(field: Field): string {
  return Object.entries(FIELDS).find(([, f]) => f === field)![0];
}

/** The value of one field in the domain's form, or a call to `fail` saying what it takes. */
function readValue(field: Field, node: Node | null, fail: (message: string) => never): unknown {
  const value: unknown = isScalar(node) ? node.value : node === null ? null : undefined;
  if (field === "include" || field === "exclude") {
    if (value === null) return [];
    if (!isSeq(node)) return fail("must be a list of globs, such as ['*.safetensors', 'onnx/']");
    return node.items.map((item) => {
      const glob = isScalar(item) ? item.value : undefined;
      return typeof glob === "string" ? glob : fail("must be a list of strings");
    });
  }
  if (value === undefined) return fail("must be a single value, not a list or mapping");
  if (field === "dimensions") {
    // proto JSON also writes integers as strings
    const n = typeof value === "string" && /^\d+$/.test(value) ? Number(value) : value;
    return typeof n === "number" && Number.isInteger(n) ? n : fail(`must be a whole number, such as 384 (got ${quote(String(value))})`);
  }
  if (field === "pinned") return value === null ? false : typeof value === "boolean" ? value : fail("must be true or false");
  if (field === "acknowledgeRemoteCodeRisk") return typeof value === "boolean" ? value : fail("must be true or false");
  const known = ENUMS[field];
  if (known) {
    if (value === null) return undefined;
    const text = typeof value === "string" ? value : "";
    const word = text.startsWith(known.prefix) ? text.slice(known.prefix.length).toLowerCase() : /^[a-z_-]+$/.test(text) ? text.replace(/-/g, "_") : "";
    if (known.words.includes(word)) return word;
    if (word === "unspecified") return undefined;
    const choices = known.words.map((w) => `${w.replace(/_/g, "-")} (${known.prefix}${w.toUpperCase()})`).join(", ");
    return fail(`has an unknown value ${quote(String(value))}: give one of ${choices}`);
  }
  if (value === null) return "";
  return typeof value === "string" ? value : fail(`must be a string (got ${quote(String(value))})`);
}
