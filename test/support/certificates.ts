// A throw-away certificate authority, a server certificate for 127.0.0.1 and
// localhost, and a client certificate, made with openssl for one test.
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface Certificates {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** a client certificate from another CA, which the server must refuse */
  strangerCert: string;
  strangerKey: string;
  /** a client certificate whose subject is not ASCII */
  unicodeCert: string;
  unicodeKey: string;
  cleanup(): Promise<void>;
}

export async function makeCertificates(): Promise<Certificates> {
  const dir = await mkdtemp(join(tmpdir(), "modelcache-tls-"));
  const path = (name: string) => join(dir, name);
  const openssl = (...args: string[]) => run("openssl", args, { cwd: dir });
  const authority = async (name: string) => {
    await openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", `/CN=${name}`, "-keyout", `${name}.key`, "-out", `${name}.pem`);
  };
  const issue = async (name: string, subject: string, ca: string, extensions: string) => {
    await openssl("req", "-new", "-utf8", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", subject, "-keyout", `${name}.key`, "-out", `${name}.csr`);
    await writeFile(path(`${name}.ext`), extensions);
    await openssl("x509", "-req", "-in", `${name}.csr`, "-CA", `${ca}.pem`, "-CAkey", `${ca}.key`, "-CAcreateserial", "-days", "1", "-extfile", `${name}.ext`, "-out", `${name}.pem`);
  };
  await authority("ca");
  await authority("other-ca");
  await issue("server", "/CN=modelcache", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
  await issue("client", "/CN=ci-client/O=acme", "ca", "extendedKeyUsage=clientAuth\n");
  await issue("unicode", "/CN=Zo\u00eb/O=acme", "ca", "extendedKeyUsage=clientAuth\n");
  await issue("stranger", "/CN=stranger", "other-ca", "extendedKeyUsage=clientAuth\n");
  return {
    dir,
    ca: path("ca.pem"),
    serverCert: path("server.pem"),
    serverKey: path("server.key"),
    clientCert: path("client.pem"),
    clientKey: path("client.key"),
    strangerCert: path("stranger.pem"),
    strangerKey: path("stranger.key"),
    unicodeCert: path("unicode.pem"),
    unicodeKey: path("unicode.key"),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}
