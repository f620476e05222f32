// deploy/kubernetes/ as kubectl and kustomize read it: every manifest parses,
// every flag and MODELCACHE_ variable it passes is one the server (or the
// client command it runs) accepts, and its ports, names and paths agree.
import { execFile } from "node:child_process";
import { readdir } from "node:fs/promises";
import { promisify } from "node:util";
import { basename, dirname, join, posix, relative } from "node:path";
import { expect } from "chai";
import { parseAllDocuments } from "yaml";
import { parseModelsFile } from "../../src/models-file/parse-models-file.js";
import { ROOT, commandFlags, flagsOf, readRepoFile, serveFlags } from "../support/deploy-files.js";

const run = promisify(execFile);

const DIR = "deploy/kubernetes";

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string } };
}
interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  ports?: { name: string; containerPort: number; hostPort?: number }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  startupProbe?: Probe;
  resources?: { requests?: Record<string, string> };
  securityContext?: {
    runAsUser?: number;
    runAsNonRoot?: boolean;
    allowPrivilegeEscalation?: boolean;
    readOnlyRootFilesystem?: boolean;
    capabilities?: { drop?: string[]; add?: string[] };
  };
}
interface Probe {
  grpc?: { port: number; service?: string };
  timeoutSeconds?: number;
}
interface Volume {
  name: string;
  hostPath?: { path: string };
  configMap?: { name: string };
  secret?: { secretName: string };
}
interface PodSpec {
  securityContext?: { runAsUser?: number; runAsGroup?: number; fsGroup?: number; seccompProfile?: { type: string } };
  containers: Container[];
  initContainers?: Container[];
  volumes: Volume[];
  terminationGracePeriodSeconds?: number;
}
interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; annotations?: Record<string, string> };
  data?: Record<string, string>;
  spec: {
    selector?: { matchLabels?: Record<string, string> } & Record<string, string>;
    clusterIP?: string;
    ports?: { name: string; port: number; targetPort: string | number }[];
    podSelector?: { matchLabels: Record<string, string> };
    policyTypes?: string[];
    ingress?: { from?: object[]; ports: { protocol: string; port: string | number }[] }[];
    template: { metadata: { labels: Record<string, string>; annotations?: Record<string, string> }; spec: PodSpec };
  };
}

const port = (address: string) => Number(address.slice(address.lastIndexOf(":") + 1));

describe("deploy/kubernetes", () => {
  let kustomization: { namespace: string; resources: string[]; images: { name: string }[] };
  let manifests: Manifest[];
  let files: string[];
  before(async () => {
    files = (await readdir(join(import.meta.dirname, "..", "..", DIR))).filter((f) => f.endsWith(".yaml")).sort();
    manifests = [];
    for (const file of files) {
      const docs = parseAllDocuments(await readRepoFile(`${DIR}/${file}`), { uniqueKeys: true });
      for (const doc of docs) {
        expect(doc.errors.map((e) => e.message), file).to.deep.equal([]);
        if (file === "kustomization.yaml") kustomization = doc.toJS();
        else manifests.push(doc.toJS() as Manifest);
      }
    }
  });
  const one = (kind: string, name?: string) => {
    const found = manifests.filter((m) => m.kind === kind && (name === undefined || m.metadata.name === name));
    expect(found, `${kind} ${name ?? ""}`).to.have.length(1);
    return found[0]!;
  };
  const server = () => one("DaemonSet").spec.template.spec.containers.find((c) => c.name === "modelcache")!;
  const arg = (name: string) => server().args!.find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1);

  it("lists every manifest in kustomization.yaml, each parsing with the kinds an operator deploys", () => {
    expect(kustomization.resources.slice().sort()).to.deep.equal(files.filter((f) => f !== "kustomization.yaml"));
    expect(manifests.map((m) => m.kind).sort()).to.deep.equal(["ConfigMap", "DaemonSet", "Deployment", "Namespace", "NetworkPolicy", "Service"]);
    // every container of ours names the image the kustomization sets
    const ours = manifests.flatMap((m) => (m.spec?.template ? [...m.spec.template.spec.containers, ...(m.spec.template.spec.initContainers ?? [])] : [])).filter((c) => c.image === "modelcache");
    expect(ours.length).to.equal(3);
    expect(kustomization.images.map((i) => i.name)).to.deep.equal(["modelcache"]);
    // the API groups a current Kubernetes serves for these kinds (no beta or removed ones)
    const served: Record<string, string> = { ConfigMap: "v1", Namespace: "v1", Service: "v1", DaemonSet: "apps/v1", Deployment: "apps/v1", NetworkPolicy: "networking.k8s.io/v1" };
    for (const m of manifests) expect(m.apiVersion, `${m.kind} ${m.metadata.name}`).to.equal(served[m.kind]);
  });

  it("runs the server unprivileged: a fixed non-root uid, no privilege escalation, no capabilities, a read-only root filesystem, the runtime's seccomp profile", () => {
    const pod = one("DaemonSet").spec.template.spec;
    expect(pod.securityContext).to.include({ runAsUser: 10001, runAsGroup: 10001, fsGroup: 10001 });
    expect(pod.securityContext!.seccompProfile).to.deep.equal({ type: "RuntimeDefault" });
    expect(server().securityContext).to.deep.equal({ runAsNonRoot: true, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } });
    // what it writes besides the data dir: /tmp, an emptyDir
    const tmp = server().volumeMounts!.find((m) => m.mountPath === "/tmp")!;
    expect(pod.volumes.find((v) => v.name === tmp.name)).to.have.property("emptyDir");
    // the one root container only hands the hostPath over: it may chown, nothing else
    for (const init of pod.initContainers ?? []) {
      if (init.securityContext?.runAsUser !== 0) continue;
      expect(init.securityContext.capabilities).to.deep.equal({ drop: ["ALL"], add: ["CHOWN"] });
      expect(init.securityContext.allowPrivilegeEscalation).to.equal(false);
    }
  });

  it("builds with kustomize (kubectl kustomize): every resource found, the image set, the namespace on each namespaced object", async function () {
    const built = await run("kubectl", ["kustomize", join(ROOT, DIR)]).catch((err: NodeJS.ErrnoException & { stderr?: string }) => {
      if (err.code === "ENOENT") return undefined;
      throw new Error(`kubectl kustomize failed: ${err.stderr ?? err.message}`);
    });
    if (built === undefined) this.skip(); // kubectl is not installed
    const objects = parseAllDocuments(built.stdout).map((d) => d.toJS() as Manifest & { metadata: { namespace?: string } });
    expect(objects.map((o) => o.kind).sort()).to.deep.equal(manifests.map((m) => m.kind).sort());
    for (const o of objects) if (o.kind !== "Namespace") expect(o.metadata.namespace, `${o.kind} ${o.metadata.name}`).to.equal(kustomization.namespace);
    const images = objects.flatMap((o) => (o.spec?.template ? [...o.spec.template.spec.containers, ...(o.spec.template.spec.initContainers ?? [])] : [])).map((c) => c.image);
    expect(images.filter((image) => image === "modelcache"), "every modelcache image rewritten").to.deep.equal([]);
  });

  it("gives the gRPC health probes the service-wide status and more than the default second to answer", () => {
    for (const probe of [server().readinessProbe!, server().livenessProbe!, server().startupProbe!]) {
      // the server reports the same status overall ("") and for its service
      expect(probe.grpc!.service ?? "").to.be.oneOf(["", "modelcache.v1.ModelCacheService"]);
      expect(probe.timeoutSeconds, "a node busy hashing answers later than 1 s").to.be.at.least(3);
    }
  });

  it("lets only the cluster's pods reach the server's ports, by the names the DaemonSet gives them", () => {
    const policy = one("NetworkPolicy");
    expect(policy.spec.podSelector!.matchLabels).to.deep.equal(one("DaemonSet").spec.template.metadata.labels);
    expect(policy.spec.policyTypes).to.deep.equal(["Ingress"]);
    const names = server().ports!.map((p) => p.name);
    const allowed = policy.spec.ingress!.flatMap((rule) => rule.ports.map((p) => p.port));
    expect(allowed.slice().sort()).to.deep.equal(names.slice().sort());
    for (const rule of policy.spec.ingress!) expect(rule.from, "a source for every rule: none would let in anyone").to.deep.equal([{ namespaceSelector: {} }]);
  });

  it("passes the server only flags and MODELCACHE_ variables `modelcache serve` accepts", async () => {
    const flags = await serveFlags();
    const container = server();
    expect(container.command, "the image's entrypoint runs serve").to.equal(undefined);
    expect(flagsOf(container.args!, flags).unknown, "flags serve does not accept").to.deep.equal([]);
    const unknownEnv = container.env!.map((e) => e.name).filter((name) => !flags.env.has(name));
    expect(unknownEnv, "variables serve does not read").to.deep.equal([]);
  });

  it("passes the consumer's init container only flags and variables its client command accepts", async () => {
    const init = one("Deployment").spec.template.spec.initContainers!.find((c) => c.image === "modelcache")!;
    const [, bin, command] = init.command!;
    expect(bin).to.equal("/app/bin/modelcache.js");
    const flags = await commandFlags([command!]);
    expect(flagsOf(init.command!.slice(2), flags).unknown).to.deep.equal([]);
    const ours = init.env!.map((e) => e.name).filter((name) => name.startsWith("MODELCACHE_"));
    expect(ours).to.include("MODELCACHE_ADDRESS");
    expect(ours.filter((name) => !flags.env.has(name)), "variables the client does not read").to.deep.equal([]);
  });

  it("agrees on ports: gRPC, hub endpoint and metrics flags, container and host ports, probes, the peers Service", () => {
    const ds = one("DaemonSet");
    const container = server();
    const ports = Object.fromEntries(container.ports!.map((p) => [p.name, p]));
    expect(port(arg("--listen")!)).to.equal(ports.grpc!.containerPort).and.equal(ports.grpc!.hostPort);
    expect(port(arg("--hub-listen")!)).to.equal(ports.hub!.containerPort).and.equal(ports.hub!.hostPort);
    expect(port(arg("--metrics-listen")!)).to.equal(ports.metrics!.containerPort);
    expect(Number(ds.spec.template.metadata.annotations!["prometheus.io/port"])).to.equal(ports.metrics!.containerPort);
    for (const probe of [container.readinessProbe, container.livenessProbe, container.startupProbe]) expect(probe!.grpc!.port).to.equal(ports.grpc!.containerPort);

    const service = one("Service", "modelcache-peers");
    expect(service.spec.clusterIP, "headless").to.equal("None");
    expect(service.spec.selector).to.deep.equal(ds.spec.template.metadata.labels);
    expect(ds.spec.selector!.matchLabels).to.deep.equal(ds.spec.template.metadata.labels);
    const [hub] = service.spec.ports!;
    expect(hub!.targetPort).to.equal("hub");
    // --peers dns:NAME:PORT names the Service in the kustomization's namespace, at the hub endpoint's port
    expect(arg("--peers")).to.equal(`dns:${service.metadata.name}.${kustomization.namespace}.svc.cluster.local:${hub!.port}`);
    expect(hub!.port).to.equal(ports.hub!.containerPort);

    const init = one("Deployment").spec.template.spec.initContainers![0]!;
    expect(init.env!.find((e) => e.name === "MODELCACHE_ADDRESS")!.value).to.equal(`$(NODE_IP):${ports.grpc!.hostPort}`);
  });

  it("agrees on paths: data dir and cache view on the node, the models file in its ConfigMap, tokens in their Secrets", () => {
    const pod = one("DaemonSet").spec.template.spec;
    const container = server();
    const volumeAt = (path: string) => {
      const mount = container.volumeMounts!.find((m) => m.mountPath === path);
      expect(mount, `a volume mounted at ${path}`).to.not.equal(undefined);
      return pod.volumes.find((v) => v.name === mount!.name)!;
    };
    const dataDir = arg("--data-dir")!;
    const data = volumeAt(dataDir);
    expect(data.hostPath, "the cache lives on the node").to.not.equal(undefined);
    const viewDir = arg("--hf-cache-dir")!;
    const inData = relative(dataDir, viewDir);
    expect(inData.startsWith(".."), "the view is on the cache root's filesystem: under the data dir").to.equal(false);
    // hard links need one filesystem: the cache root (--cache-dir, else under the data dir) and the view lie in the data volume, no other mount between
    const cacheRoot = arg("--cache-dir") ?? posix.join(dataDir, "ai_models_cache");
    for (const path of [cacheRoot, viewDir]) {
      const mounts = container.volumeMounts!.filter((m) => path === m.mountPath || path.startsWith(`${m.mountPath}/`) || m.mountPath.startsWith(`${path}/`));
      expect(mounts.map((m) => m.name), path).to.deep.equal([data.name]);
    }

    // the models file: its directory is the ConfigMap (no subPath), its name one of the ConfigMap's keys
    const modelsFile = arg("--models-file")!;
    const models = volumeAt(dirname(modelsFile));
    const configMap = one("ConfigMap", models.configMap!.name);
    expect(Object.keys(configMap.data!)).to.include(basename(modelsFile));
    expect(parseModelsFile(configMap.data![basename(modelsFile)]!, modelsFile).map((m) => m.name)).to.include("minilm");

    for (const flag of ["--auth-tokens", "--peer-token-file"]) expect(volumeAt(dirname(arg(flag)!)).secret, flag).to.not.equal(undefined);
    expect(pod.terminationGracePeriodSeconds, "long enough for calls, hub downloads (10 s each) and pulls to park").to.be.at.least(30);
    expect(container.resources!.requests).to.have.keys("cpu", "memory");

    // the consumer reads the view from the same place on the node, read-only, as HF_HUB_CACHE, offline
    const consumer = one("Deployment").spec.template.spec;
    const reader = consumer.containers[0]!;
    const cacheEnv = Object.fromEntries(reader.env!.map((e) => [e.name, e.value]));
    const mount = reader.volumeMounts!.find((m) => m.mountPath === cacheEnv.HF_HUB_CACHE)!;
    expect(mount.readOnly).to.equal(true);
    expect(consumer.volumes.find((v) => v.name === mount.name)!.hostPath!.path).to.equal(posix.join(data.hostPath!.path, inData));
    expect(cacheEnv.HF_HUB_OFFLINE).to.equal("1");
    // what the init container resolves is a model the ConfigMap lists
    expect(consumer.initContainers![0]!.command!.at(-1)).to.equal("minilm");
  });
});
