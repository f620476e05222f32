// Who can reach the server and how: TLS (and mTLS with a client CA), and the
// rule that a server without authentication listens on loopback only unless
// the operator says --insecure-no-auth.
import { readFile } from "node:fs/promises";
import { isIP } from "node:net";
import { ServerCredentials } from "@grpc/grpc-js";
import { ModelCacheError, quote } from "../errors.js";

export interface TlsFiles {
  cert: string;
  key: string;
  /** when set, clients must present a certificate signed by it */
  clientCa?: string;
}

export async function serverCredentials(tls: TlsFiles | undefined): Promise<ServerCredentials> {
  if (!tls) return ServerCredentials.createInsecure();
  const read = async (file: string, flag: string) => {
    try {
      return await readFile(file);
    } catch (err) {
      throw new ModelCacheError("failed_precondition", `cannot read ${flag} ${quote(file)}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  };
  const [cert, key, ca] = await Promise.all([read(tls.cert, "--tls-cert"), read(tls.key, "--tls-key"), tls.clientCa ? read(tls.clientCa, "--tls-client-ca") : undefined]);
  return ServerCredentials.createSsl(ca ?? null, [{ cert_chain: cert, private_key: key }], ca !== undefined);
}

/** The host part of host:port, without IPv6 brackets. */
export function hostOf(listen: string): string {
  const host = listen.slice(0, Math.max(0, listen.lastIndexOf(":")));
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

export function isLoopback(host: string): boolean {
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  if (isIP(host) === 6) return host === "::1" || host.startsWith("::ffff:127.");
  return false;
}

export interface Exposure {
  listen: string;
  /** callers must present a token */
  tokens: boolean;
  tls: TlsFiles | undefined;
  insecureNoAuth: boolean;
  insecureNoTls: boolean;
}

/**
 * Beyond loopback, callers must authenticate (tokens, or client certificates
 * with --tls-client-ca) and tokens must travel over TLS, unless the operator
 * insists (say, behind a proxy or mesh that terminates TLS and checks callers).
 */
export function checkExposure(exposure: Exposure): void {
  if (isLoopback(hostOf(exposure.listen))) return;
  const authenticated = exposure.tokens || exposure.tls?.clientCa !== undefined;
  if (!authenticated && !exposure.insecureNoAuth) {
    throw new ModelCacheError(
      "failed_precondition",
      `--listen ${quote(exposure.listen)} is not a loopback address and authentication is off: give --auth-tokens FILE (see 'modelcache tokens new') or --tls-client-ca, listen on 127.0.0.1, or accept the risk with --insecure-no-auth`,
    );
  }
  if (exposure.tokens && !exposure.tls && !exposure.insecureNoTls) {
    throw new ModelCacheError(
      "failed_precondition",
      `--listen ${quote(exposure.listen)} is not a loopback address and tokens would cross the network in clear text: give --tls-cert and --tls-key, or --insecure-no-tls when a proxy in front terminates TLS`,
    );
  }
}
