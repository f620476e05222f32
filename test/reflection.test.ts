import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { credentials, loadPackageDefinition } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { fromBinary } from "@bufbuild/protobuf";
import { expect } from "chai";
import { type TestServer, startTestServer } from "./support/test-server.js";

const reflectionProtos = join(dirname(createRequire(import.meta.url).resolve("@grpc/reflection")), "..", "proto", "grpc", "reflection");

interface ReflectionResponse {
  listServicesResponse?: { service: { name: string }[] };
  fileDescriptorResponse?: { fileDescriptorProto: Buffer[] };
  errorResponse?: { errorMessage: string };
}

/** Sends one request on a ServerReflectionInfo stream of the given version and returns the answer. */
function ask(address: string, version: "v1" | "v1alpha", request: Record<string, unknown>): Promise<ReflectionResponse> {
  const definition = loadSync(join(reflectionProtos, version, "reflection.proto"), { keepCase: false });
  const pkg = loadPackageDefinition(definition) as unknown as Record<string, any>;
  const Service = pkg.grpc.reflection[version].ServerReflection;
  const client = new Service(address, credentials.createInsecure());
  return new Promise((resolve, reject) => {
    const stream = client.serverReflectionInfo();
    stream.on("data", (response: ReflectionResponse) => {
      resolve(response);
      stream.end();
      client.close();
    });
    stream.on("error", reject);
    stream.write(request);
  });
}

describe("server reflection", () => {
  let t: TestServer;
  beforeEach(async () => {
    t = await startTestServer();
  });
  afterEach(() => t.close());

  for (const version of ["v1", "v1alpha"] as const) {
    it(`serves grpc.reflection.${version}: lists the services`, async () => {
      const response = await ask(t.server.address, version, { listServices: "" });
      expect(response.listServicesResponse!.service.map((s) => s.name)).to.include.members(["modelcache.v1.ModelCacheService", "grpc.health.v1.Health"]);
    });

    it(`serves grpc.reflection.${version}: the service's file keeps its import of timestamp.proto, which is served too`, async () => {
      const response = await ask(t.server.address, version, { fileContainingSymbol: "modelcache.v1.ModelCacheService" });
      const files = response.fileDescriptorResponse!.fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes));
      const contract = files.find((f) => f.name === "modelcache/v1/model_cache.proto");
      expect(contract?.dependency).to.deep.equal(["google/protobuf/timestamp.proto"]);
      expect(contract?.service.map((s) => s.name)).to.deep.equal(["ModelCacheService"]);
      expect(files.map((f) => f.name)).to.include("google/protobuf/timestamp.proto");
    });
  }
});
