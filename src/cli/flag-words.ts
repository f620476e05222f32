// The server's messages name the request's fields (fixture_dir, model.source)
// and its RPCs; a person who ran a command gave flags. Each command's errors
// are told in the words of the flags that filled those fields.

/** Replacements, applied in order: a phrase first, then the bare field. */
export type Wording = readonly (readonly [RegExp, string])[];

/** A field name as a whole word: `model.source` but not `model.source_x` or `x.model.source`. */
function field(name: string): RegExp {
  return new RegExp(`(?<![\\w.])${name.replace(/\./g, "\\.")}(?![\\w])`, "g");
}

/** Advice that names an RPC, as the command that makes the call. */
const COMMANDS: Wording = [
  [/release it \(ReleaseLease\)/g, "release it ('modelcache leases release ID')"],
  [/\bwith PutSecret\b/g, "with 'modelcache secrets put ALIAS'"],
  [/\bwith UpdateModel\b/g, "with 'modelcache models update'"],
  [/\buse UpdateModel\b/g, "use 'modelcache models update'"],
  [/a forced DropCache/g, "'modelcache drop --force'"],
  [/call DropCache first/g, "run 'modelcache drop' first"],
];

const SPEC: Wording = [
  ...(
    [
      ["model.source", "--source"],
      ["model.revision", "--revision"],
      ["model.dimensions", "--dimensions"],
      ["model.credential_alias", "--credential-alias"],
      ["model.include", "--include"],
      ["model.exclude", "--exclude"],
      ["model.pull_policy", "--pull-policy"],
      ["model.name", "NAME"],
    ] as const
  ).map(([name, flag]) => [field(name), flag] as const),
];

export const WORDING = {
  spec: SPEC,
  unregister: [
    [/set drop_cache to true/g, "pass --drop-cache"],
    [/UnregisterModel with drop_cache/g, "'modelcache models rm --drop-cache'"],
    [field("drop_cache"), "--drop-cache"],
  ],
  drop: [[/set force to end/g, "pass --force to end"]],
  pull: [
    [/set fixture_dir in the PullRequest/g, "pass --fixture-dir DIR"],
    [field("fixture_dir"), "--fixture-dir"],
    [/attach without force/g, "attach without --force"],
    [/; force cannot/g, "; --force cannot"],
  ],
  resolve: [
    [/resolve with PULL_POLICY_IF_MISSING/g, "resolve with --policy if-missing"],
    [field("lease_seconds"), "--lease"],
    [field("pull_policy"), "--policy"],
  ],
  release: [[field("lease_id"), "the lease ID"]],
} satisfies Record<string, Wording>;

/** A server's message in the words of the command that sent the call. */
export function inFlagWords(details: string, wording: Wording = []): string {
  let text = details;
  for (const [pattern, words] of [...wording, ...COMMANDS]) text = text.replace(pattern, words);
  return text;
}
