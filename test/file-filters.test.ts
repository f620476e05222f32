import { expect } from "chai";
import { filterFiles, fnmatch } from "../src/sources/file-filters.js";

describe("include / exclude globs (fnmatch, as huggingface_hub)", () => {
  const files = ["config.json", "model.safetensors", "pytorch_model.bin", "onnx/model.onnx", "onnx/sub/x.bin", "1_Pooling/config.json", "a[1].txt"].map((path) => ({ path, sizeBytes: 1 }));
  const kept = (include: string[], exclude: string[]) => filterFiles(files, include, exclude).map((f) => f.path);

  it("lets '*' match '/' too", () => {
    expect(fnmatch("*.bin").test("onnx/sub/x.bin")).to.equal(true);
    expect(fnmatch("*.json").test("1_Pooling/config.json")).to.equal(true);
  });

  it("reads a trailing '/' as everything below", () => {
    expect(kept(["onnx/"], [])).to.deep.equal(["onnx/model.onnx", "onnx/sub/x.bin"]);
  });

  it("supports ? and [sets], and treats other characters literally", () => {
    expect(fnmatch("model.?nnx").test("model.onnx")).to.equal(true);
    expect(fnmatch("model.?nnx").test("model.nnx")).to.equal(false);
    expect(fnmatch("onnx/model.?nnx").test("onnx/model.onnx")).to.equal(true);
    expect(fnmatch("a[!0-9].txt").test("a[1].txt")).to.equal(false);
    expect(fnmatch("a[[]1].txt").test("a[1].txt")).to.equal(true);
    expect(fnmatch("model.safetensors").test("modelXsafetensors")).to.equal(false);
  });

  it("takes every file when include is empty, and lets exclude win", () => {
    expect(kept([], ["*.bin", "onnx/*"])).to.deep.equal(["config.json", "model.safetensors", "1_Pooling/config.json", "a[1].txt"]);
    expect(kept(["*.bin"], ["onnx/*"])).to.deep.equal(["pytorch_model.bin"]);
  });

  it("refuses when nothing is left, naming the filters", () => {
    expect(() => kept(["*.gguf"], [])).to.throw(/\*\.gguf/);
  });
});
