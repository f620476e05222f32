// What the torture pulls from: two versions of a model in local directories
// (sharing some files, with nested paths, so that a mixed install would show)
// and a third version served by a fake hub, slowed down so that a kill lands
// in the middle of a download as often as not; and the small models the
// capacity rounds pull side by side under the quota, sharing one file.
import { createHash } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { FakeHub } from "../support/fake-hub.js";

/** The files of one version of a model, path -> sha256. */
export type Version = ReadonlyMap<string, string>;

export interface Sources {
  /** root of the local versions, given to the server as --fixture-root */
  root: string;
  dirs: { A: string; B: string };
  /** the capacity rounds' models: name -> directory */
  capacity: Record<string, string>;
  hub: FakeHub;
  versions: { A: Version; B: Version; H: Version };
  close(): Promise<void>;
}

export const HUB_REPO = "torture/hub-model";
export const CAPACITY_MODELS = ["cap-1", "cap-2", "cap-3", "cap-4"] as const;
const MiB = 1024 * 1024;

async function writeVersion(dir: string, files: Record<string, Buffer>): Promise<Version> {
  const version = new Map<string, string>();
  for (const [path, bytes] of Object.entries(files)) {
    await mkdir(dirname(join(dir, path)), { recursive: true });
    await writeFile(join(dir, path), bytes);
    version.set(path, createHash("sha256").update(bytes).digest("hex"));
  }
  return version;
}

export async function makeSources(root: string, random: () => number): Promise<Sources> {
  // seeded content (xorshift32), so that a run is reproducible from its seed
  const bytes = (n: number) => {
    const out = Buffer.allocUnsafe(n);
    let x = Math.floor(random() * 2 ** 32) | 1;
    for (let i = 0; i + 4 <= n; i += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      out.writeInt32LE(x | 0, i);
    }
    return out;
  };
  const shared = { "config.json": Buffer.from('{"hidden_size": 384}\n'), "tokenizer/vocab.txt": bytes(1 * MiB) };
  // many small files make deletes and promotions long enough for a kill to land inside them
  const many = Object.fromEntries(Array.from({ length: 120 }, (_, i) => [`vocab/part-${String(i).padStart(3, "0")}.txt`, bytes(4096)]));
  const A = await writeVersion(join(root, "A"), { ...shared, ...many, "model.safetensors": bytes(6 * MiB), "onnx/model.onnx": bytes(4 * MiB), "onnx/nested/deep/extra.bin": bytes(2 * MiB) });
  const B = await writeVersion(join(root, "B"), { ...shared, "model.safetensors": bytes(6 * MiB), "onnx/model.onnx": bytes(4 * MiB), "pooling/config.json": Buffer.from('{"mode": "mean"}\n') });
  const hubDir = join(root, "hub");
  // the hub's model shares the local versions' vocabulary: one content in the store for both models
  const H = await writeVersion(hubDir, { "tokenizer/vocab.txt": shared["tokenizer/vocab.txt"], "config.json": Buffer.from('{"hidden_size": 768}\n'), "model-00001-of-00002.safetensors": bytes(3 * MiB), "model-00002-of-00002.safetensors": bytes(3 * MiB), "sub/tokenizer.json": bytes(256 * 1024) });
  const hub = await FakeHub.serve(HUB_REPO, hubDir);
  // ~1 s for the whole repo: most kills land during the download
  hub.faults.bytesPerSecond = 6 * MiB;
  // content shared only by models that may all be evicted: freed once the last of them goes
  const capacityShared = bytes(1 * MiB);
  const capacity: Record<string, string> = {};
  for (const name of CAPACITY_MODELS) {
    capacity[name] = join(root, name);
    await writeVersion(capacity[name], { "config.json": Buffer.from(`{"name": "${name}"}\n`), "shared.bin": capacityShared, "model.safetensors": bytes(2 * MiB) });
  }
  return { root, dirs: { A: join(root, "A"), B: join(root, "B") }, capacity, hub, versions: { A, B, H }, close: () => hub.close() };
}
