// Canonical proto3 JSON for what the CLI prints with --json: 64-bit integers
// as strings, enums by name, timestamps in RFC 3339, as grpcurl and every
// other protobuf runtime print them. ts-proto's own toJSON follows the code
// generator's options (64-bit integers as numbers here), so each message is
// re-read through @bufbuild/protobuf with the schema from the descriptor set
// that `npm run generate` writes.
import { readFileSync } from "node:fs";
import { type FileRegistry, type JsonValue, createFileRegistry, fromBinary, toJson } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";

// read on first use: most commands never print JSON
let registry: FileRegistry | undefined;

/** A message of ours, given as its type name and binary encoding, as proto3 JSON. */
export function protoJson(typeName: string, bytes: Uint8Array): JsonValue {
  registry ??= createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(new URL("../../generated/modelcache.binpb", import.meta.url))));
  const schema = registry.getMessage(typeName);
  if (!schema) throw new Error(`no message type ${typeName} in the descriptor set`);
  return toJson(schema, fromBinary(schema, bytes));
}
