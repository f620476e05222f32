// TLS and mTLS with certificates made for the test, driven through the real
// CLI: the server's flags, the client's flags, and who the audit log names.
import { expect } from "chai";
import { type Certificates, makeCertificates } from "./support/certificates.js";
import { type LogCapture, captureLogs } from "./support/log-capture.js";
import { runCli } from "./support/run-cli.js";
import { type TestServer, startTestServer } from "./support/test-server.js";

describe("TLS", () => {
  let certs: Certificates;
  before(async () => {
    certs = await makeCertificates();
  });
  after(() => certs.cleanup());

  describe("server TLS", () => {
    let t: TestServer;
    beforeEach(async () => {
      t = await startTestServer({ tls: { cert: certs.serverCert, key: certs.serverKey } });
    });
    afterEach(() => t.close());

    it("serves a client that trusts its CA, and not a plaintext one", async () => {
      const secure = await runCli(t.server.address, ["models", "list", "--json", "--tls-ca", certs.ca]);
      expect(secure.code, secure.stderr).to.equal(0);
      const plain = await runCli(t.server.address, ["models", "list"]);
      expect(plain.code).to.equal(1);
    });

    it("refuses a client that does not trust its certificate", async () => {
      const untrusting = await runCli(t.server.address, ["models", "list", "--tls"]);
      expect(untrusting.code).to.equal(1);
      expect(untrusting.stderr).to.match(/error: /);
    });
  });

  describe("mutual TLS", () => {
    let t: TestServer;
    let logs: LogCapture;
    beforeEach(async () => {
      logs = captureLogs("warn");
      t = await startTestServer({ tls: { cert: certs.serverCert, key: certs.serverKey, clientCa: certs.ca }, logger: logs.logger });
    });
    afterEach(() => t.close());

    it("requires a client certificate signed by --tls-client-ca, and names its subject in the audit log", async () => {
      const without = await runCli(t.server.address, ["models", "list", "--tls-ca", certs.ca]);
      expect(without.code).to.equal(1);
      const stranger = await runCli(t.server.address, ["models", "list", "--tls-ca", certs.ca, "--tls-client-cert", certs.strangerCert, "--tls-client-key", certs.strangerKey]);
      expect(stranger.code).to.equal(1);
      const client = ["--tls-ca", certs.ca, "--tls-client-cert", certs.clientCert, "--tls-client-key", certs.clientKey];
      const registered = await runCli(t.server.address, ["models", "register", "minilm", "--source", "org/minilm", "--dimensions", "8", ...client]);
      expect(registered.code, registered.stderr).to.equal(0);
      const audit = logs.audit();
      expect(audit).to.have.length(1);
      expect(audit[0]).to.include({ method: "RegisterModel", model: "minilm", result: "OK" });
      expect(audit[0]!.caller).to.match(/CN=ci-client/).and.match(/O=acme/);
    });

    it("counts client certificates as authentication: such a server may listen beyond loopback", async () => {
      const wide = await startTestServer({ listen: "0.0.0.0:0", tls: { cert: certs.serverCert, key: certs.serverKey, clientCa: certs.ca } });
      await wide.close();
    });

    it("serves a client whose certificate subject is not ASCII, naming it escaped in the audit log", async () => {
      const client = ["--tls-ca", certs.ca, "--tls-client-cert", certs.unicodeCert, "--tls-client-key", certs.unicodeKey];
      const registered = await runCli(t.server.address, ["models", "register", "minilm", "--source", "org/minilm", "--dimensions", "8", ...client]);
      expect(registered.code, registered.stderr).to.equal(0);
      expect(logs.audit()[0]!.caller).to.include("CN=Zo\\u{eb}");
      const listed = await runCli(t.server.address, ["models", "list", ...client]);
      expect(listed.stdout).to.include("minilm");
    });
  });
});
