// gRPC server reflection fed from the descriptor sets that `buf build`
// writes (generated/*.binpb, see `npm run generate`). Each file keeps its
// own imports, so reflection clients such as grpcurl and `buf curl` can
// resolve google/protobuf/timestamp.proto; a package definition that
// proto-loader builds from .proto files drops them (grpc-node #2595).
// grpc.health.v1 is described too, so Health/Check can be called by reflection.
//
// The reflection services are answered by @grpc/reflection, loaded with its
// protobuf.js descriptors on the first reflection call, not at start: some
// 3 to 5 MB of a server at rest that no client may ever ask for. Until then
// each service is registered with its messages passed through as bytes.
import { EventEmitter } from "node:events";
import { readFileSync } from "node:fs";
import { type Server, type ServerDuplexStream, type ServiceDefinition, type UntypedServiceImplementation, status } from "@grpc/grpc-js";
import type { PackageDefinition, ProtobufTypeDefinition } from "@grpc/proto-loader";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

const DESCRIPTOR_SETS = ["modelcache.binpb", "health.binpb"].map((file) => new URL(`../../generated/${file}`, import.meta.url));

/**
 * ReflectionService reads nothing of a package definition but each entry's
 * encoded files, and decodes every file of every entry: one entry per
 * descriptor set, holding its files, has each file decoded once, and spares
 * a parse of the sets into message types nothing here uses.
 */
async function loadReflection(): Promise<Map<string, Loaded>> {
  const { ReflectionService } = await import("@grpc/reflection");
  const definition: PackageDefinition = {};
  for (const url of DESCRIPTOR_SETS) {
    const fileDescriptorProtos = splitFileDescriptorSet(readFileSync(url));
    const entry: ProtobufTypeDefinition = { format: "", type: {}, fileDescriptorProtos };
    // not a type a client could be built from, which ReflectionService never asks of it
    definition[url.pathname] = entry as unknown as PackageDefinition[string];
  }
  // what it would add to a server, by method path
  const loaded = new Map<string, Loaded>();
  const recorder = {
    addService(service: ServiceDefinition, implementation: UntypedServiceImplementation) {
      for (const [name, method] of Object.entries(service)) loaded.set(method.path, { method, handler: implementation[name] as (stream: unknown) => void });
    },
  };
  new ReflectionService(definition).addToServer(recorder as unknown as Server);
  return loaded;
}

interface Loaded {
  method: ServiceDefinition[string];
  handler: (stream: unknown) => void;
}

const REFLECTION_PATHS = ["/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"];

export function addReflection(server: Server): void {
  let loading: Promise<Map<string, Loaded>> | undefined;
  const bytes = (value: Buffer) => value;
  for (const path of REFLECTION_PATHS) {
    const service: ServiceDefinition = {
      ServerReflectionInfo: { path, requestStream: true, responseStream: true, requestSerialize: bytes, requestDeserialize: bytes, responseSerialize: bytes, responseDeserialize: bytes, originalName: "serverReflectionInfo" },
    };
    server.addService(service, {
      ServerReflectionInfo: (call: ServerDuplexStream<Buffer, Buffer>) => {
        // the requests as they come, decoded once the real service is loaded
        const requests: Buffer[] = [];
        let ended = false;
        let feed: ((request: Buffer) => void) | undefined;
        let finish: (() => void) | undefined;
        call.on("data", (request: Buffer) => (feed ? feed(request) : requests.push(request)));
        call.on("end", () => (finish ? finish() : (ended = true)));
        loading ??= loadReflection();
        loading.then(
          (loaded) => {
            const { method, handler } = loaded.get(path)!;
            // the stream the real handler sees: decoded requests in, its responses encoded out
            const stream = Object.assign(new EventEmitter(), {
              write: (response: unknown) => call.write(method.responseSerialize(response)),
              end: () => call.end(),
            });
            handler(stream);
            feed = (request) => stream.emit("data", method.requestDeserialize(request));
            finish = () => stream.emit("end");
            for (const request of requests.splice(0)) feed(request);
            if (ended) finish();
          },
          (err: unknown) => {
            // the next call tries again
            loading = undefined;
            call.emit("error", { code: status.UNAVAILABLE, details: `server reflection could not be loaded (${(err as Error).message}); try again` });
          },
        );
      },
    });
  }
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
