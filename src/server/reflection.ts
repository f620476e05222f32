// gRPC server reflection fed from the descriptor sets that `buf build`
// writes (generated/*.binpb, see `npm run generate`). Each file keeps its
// own imports, so reflection clients such as grpcurl and `buf curl` can
// resolve google/protobuf/timestamp.proto; a package definition that
// proto-loader builds from .proto files drops them (grpc-node #2595).
// grpc.health.v1 is described too, so Health/Check can be called by reflection.
import { readFileSync } from "node:fs";
import type { Server } from "@grpc/grpc-js";
import { loadFileDescriptorSetFromBuffer, type PackageDefinition } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

const DESCRIPTOR_SETS = ["modelcache.binpb", "health.binpb"].map((file) => new URL(`../../generated/${file}`, import.meta.url));

export function addReflection(server: Server): void {
  const definition: PackageDefinition = {};
  for (const url of DESCRIPTOR_SETS) {
    const descriptorSet = readFileSync(url);
    const files = splitFileDescriptorSet(descriptorSet);
    for (const [name, entry] of Object.entries(loadFileDescriptorSetFromBuffer(descriptorSet))) {
      definition[name] = { ...entry, fileDescriptorProtos: files } as PackageDefinition[string];
    }
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
