// grpc.health.v1.Health/Check through a client built from the health proto
// (no reflection needed), resolving with the status code and serving status.
import { Metadata, type ServiceError, credentials, loadPackageDefinition, status } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { protoPath } from "grpc-health-check";

type HealthClient = { check: (req: { service: string }, md: Metadata, cb: (err: ServiceError | null, res?: { status: string }) => void) => void; close(): void };

export async function healthCheck(address: string, service = "", metadata = new Metadata()): Promise<{ code: status; status?: string }> {
  const health = loadPackageDefinition(loadSync(protoPath, { enums: String })) as unknown as {
    grpc: { health: { v1: { Health: new (address: string, creds: ReturnType<typeof credentials.createInsecure>) => HealthClient } } };
  };
  const client = new health.grpc.health.v1.Health(address, credentials.createInsecure());
  try {
    return await new Promise((resolve) =>
      client.check({ service }, metadata, (err, res) => resolve(err ? { code: err.code } : { code: status.OK, status: res?.status })),
    );
  } finally {
    client.close();
  }
}
