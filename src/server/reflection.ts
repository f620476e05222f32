// gRPC server reflection fed from the descriptor sets that `buf build`
// writes (generated/*.binpb, see `npm run generate`). Each file keeps its
// own imports, so reflection clients such as grpcurl and `buf curl` can
// resolve google/protobuf/timestamp.proto; a package definition that
// proto-loader builds from .proto files drops them (grpc-node #2595).
// grpc.health.v1 is described too, so Health/Check can be called by reflection.
import { readFileSync } from "node:fs";
import type { Server } from "@grpc/grpc-js";
import type { PackageDefinition, ProtobufTypeDefinition } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

const DESCRIPTOR_SETS = ["modelcache.binpb", "health.binpb"].map((file) => new URL(`../../generated/${file}`, import.meta.url));

/**
 * ReflectionService reads nothing of a package definition but each entry's
 * encoded files, and decodes every file of every entry: one entry per
 * descriptor set, holding its files, has each file decoded once, and spares
 * a parse of the sets into message types nothing here uses.
 */
export function addReflection(server: Server): void {
  const definition: PackageDefinition = {};
  for (const url of DESCRIPTOR_SETS) {
    const fileDescriptorProtos = splitFileDescriptorSet(readFileSync(url));
    const entry: ProtobufTypeDefinition = { format: "", type: {}, fileDescriptorProtos };
    // not a type a client could be built from, which ReflectionService never asks of it
    definition[url.pathname] = entry as unknown as PackageDefinition[string];
  }
  new ReflectionService(definition).addToServer(server);
}

/** The encoded FileDescriptorProtos of a FileDescriptorSet (field 1, repeated), byte for byte. */
function splitFileDescriptorSet(bytes: Uint8Array): Buffer[] {
  const reader = new BinaryReader(bytes);
  const files: Buffer[] = [];
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1 && wireType === WireType.LengthDelimited) files.push(Buffer.from(reader.bytes()));
    else reader.skip(wireType);
  }
  return files;
}
