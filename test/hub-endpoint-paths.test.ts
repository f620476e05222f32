import { expect } from "chai";
import { byteRange } from "../src/hub-endpoint/byte-range.js";
import { parseHubPath } from "../src/hub-endpoint/parse-hub-path.js";

describe("the hub endpoint's paths and ranges", () => {
  it("tells where a repository id of one or two segments ends, decoding each segment on its own", () => {
    expect(parseHubPath("GET", "/api/models/org/name")).to.deep.equal({ route: "model_info", repo: "org/name", revision: "main" });
    expect(parseHubPath("GET", "/api/models/gpt2")).to.deep.equal({ route: "model_info", repo: "gpt2", revision: "main" });
    expect(parseHubPath("GET", "/api/models/gpt2/revision/main")).to.deep.equal({ route: "model_info", repo: "gpt2", revision: "main" });
    expect(parseHubPath("GET", "/api/models/org/name/revision/refs%2Fpr%2F1")).to.deep.equal({ route: "model_info", repo: "org/name", revision: "refs/pr/1" });
    expect(parseHubPath("GET", "/api/models/org/name/tree/main/onnx/")).to.deep.equal({ route: "tree", repo: "org/name", revision: "main", path: "onnx" });
    expect(parseHubPath("GET", "/api/models/org/name/tree/main")).to.deep.equal({ route: "tree", repo: "org/name", revision: "main", path: "" });
    expect(parseHubPath("POST", "/api/models/org/name/paths-info/abc")).to.deep.equal({ route: "paths_info", repo: "org/name", revision: "abc" });
    expect(parseHubPath("GET", "/org/name/resolve/main/onnx/model.onnx")).to.deep.equal({ route: "resolve", repo: "org/name", revision: "main", path: "onnx/model.onnx" });
    expect(parseHubPath("HEAD", "/gpt2/resolve/v1.0/config.json")).to.deep.equal({ route: "resolve", repo: "gpt2", revision: "v1.0", path: "config.json" });
    // an encoded slash stays inside its segment, and reaches the path checks as it is
    expect(parseHubPath("GET", "/org/name/resolve/main/..%2Fsecret")).to.deep.equal({ route: "resolve", repo: "org/name", revision: "main", path: "../secret" });
    expect(parseHubPath("GET", `/v2/a/b/c/blobs/sha256:${"ab".repeat(32)}`)).to.deep.equal({ route: "blob", sha256: "ab".repeat(32) });
  });

  it("matches no route for other methods, missing parts or malformed digests", () => {
    expect(parseHubPath("POST", "/org/name/resolve/main/config.json")).to.equal(undefined);
    expect(parseHubPath("GET", "/api/models/org/name/paths-info/main")).to.equal(undefined);
    expect(parseHubPath("DELETE", "/api/models/org/name")).to.equal(undefined);
    expect(parseHubPath("GET", "/org/name/resolve/main")).to.equal(undefined);
    expect(parseHubPath("GET", "/org/name/resolve//config.json")).to.equal(undefined);
    expect(parseHubPath("GET", "/api/models/a/b/c")).to.equal(undefined);
    expect(parseHubPath("GET", "/v2/x/blobs/sha256:XYZ")).to.equal(undefined);
    expect(parseHubPath("PUT", `/v2/x/blobs/sha256:${"0".repeat(64)}`)).to.equal(undefined);
    expect(() => parseHubPath("GET", "/org/name/resolve/main/%E0%A4%A")).to.throw(/percent-encoded/);
  });

  it("reads one byte range, ignores what it does not understand, and finds ranges outside the file unsatisfiable", () => {
    expect(byteRange(undefined, 10)).to.deep.equal({ kind: "whole" });
    expect(byteRange("bytes=0-0", 10)).to.deep.equal({ kind: "part", start: 0, end: 0 });
    expect(byteRange("bytes=2-", 10)).to.deep.equal({ kind: "part", start: 2, end: 9 });
    expect(byteRange("bytes=-3", 10)).to.deep.equal({ kind: "part", start: 7, end: 9 });
    expect(byteRange("bytes=-30", 10)).to.deep.equal({ kind: "part", start: 0, end: 9 });
    expect(byteRange("bytes=5-100", 10)).to.deep.equal({ kind: "part", start: 5, end: 9 });
    expect(byteRange("bytes=10-", 10)).to.deep.equal({ kind: "unsatisfiable" });
    expect(byteRange("bytes=10-20", 10)).to.deep.equal({ kind: "unsatisfiable" });
    expect(byteRange("bytes=-0", 10)).to.deep.equal({ kind: "unsatisfiable" });
    // not understood: the whole file, as RFC 9110 allows
    for (const header of ["bytes=5-2", "bytes=0-1,3-4", "items=0-1", "bytes=-", "bytes=a-b"]) expect(byteRange(header, 10), header).to.deep.equal({ kind: "whole" });
    // an empty file is sent whole, whatever is asked
    expect(byteRange("bytes=0-0", 0)).to.deep.equal({ kind: "whole" });
  });
});
