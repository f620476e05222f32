// grpc.health.v1.Health/Check through a client built from the health proto
// (no reflection needed), resolving with the status code and serving status.
import { type ClientReadableStream, Metadata, type ServiceError, credentials, loadPackageDefinition, status } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { protoPath } from "grpc-health-check";

type HealthClient = {
  check: (req: { service: string }, md: Metadata, cb: (err: ServiceError | null, res?: { status: string }) => void) => void;
  watch: (req: { service: string }) => ClientReadableStream<{ status: string }>;
  close(): void;
};

function healthClient(address: string): HealthClient {
  const health = loadPackageDefinition(loadSync(protoPath, { enums: String })) as unknown as {
    grpc: { health: { v1: { Health: new (address: string, creds: ReturnType<typeof credentials.createInsecure>) => HealthClient } } };
  };
  return new health.grpc.health.v1.Health(address, credentials.createInsecure());
}

/** Resolves once grpc.health.v1.Health/Watch reports `wanted` for the service (no polling: the server pushes each change). */
export async function healthBecomes(address: string, wanted: string, service = ""): Promise<void> {
  const client = healthClient(address);
  const stream = client.watch({ service });
  try {
    await new Promise<void>((resolve, reject) => {
      stream.on("data", (res: { status: string }) => {
        if (res.status === wanted) resolve();
      });
      stream.on("error", reject);
    });
  } finally {
    stream.cancel();
    client.close();
  }
}

export async function healthCheck(address: string, service = "", metadata = new Metadata()): Promise<{ code: status; status?: string }> {
  const client = healthClient(address);
  try {
    return await new Promise((resolve) =>
      client.check({ service }, metadata, (err, res) => resolve(err ? { code: err.code } : { code: status.OK, status: res?.status })),
    );
  } finally {
    client.close();
  }
}
