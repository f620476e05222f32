// The Range header of a file request (RFC 9110): one range `bytes=A-B`, `A-`
// or `-N`. A header this does not understand (another unit, several ranges)
// is ignored and the whole file sent, as the RFC allows; a range that lies
// outside the file is unsatisfiable (416).

export type RangeAnswer = { kind: "whole" } | { kind: "part"; start: number; end: number } | { kind: "unsatisfiable" };

/** `end` is inclusive, as in Content-Range. */
export function byteRange(header: string | undefined, size: number): RangeAnswer {
  // an empty file has no byte to point at: it is sent whole (huggingface.js asks for bytes=0-0 of every file)
  if (header === undefined || size === 0) return { kind: "whole" };
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === "" && match[2] === "")) return { kind: "whole" };
  if (match[1] === "") {
    const suffix = Number(match[2]);
    if (suffix === 0) return { kind: "unsatisfiable" };
    return { kind: "part", start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(match[1]);
  const last = match[2] === "" ? Number.MAX_SAFE_INTEGER : Number(match[2]);
  // A-B with B before A is no valid range at all: ignored
  if (last < start) return { kind: "whole" };
  if (start >= size) return { kind: "unsatisfiable" };
  return { kind: "part", start, end: Math.min(last, size - 1) };
}
