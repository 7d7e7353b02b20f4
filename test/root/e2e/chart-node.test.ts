// A node, through the runtime, no kubelet: the test plays kubelet for Istio's chart. It imports our
// image (`npm run image`) into a private containerd and runs it as a CRI container from exactly
// the DaemonSet of install/kubernetes/ambient/ (the chart's rendering, test/root/e2e/kubelet-pod.ts
// turns it into what kubelet sends): its own pod netns (no host network), the hostPath mounts with
// their propagation, env from the ConfigMap and the downward API, the chart's capabilities,
// AppArmor unconfined, the service-account files, `install-cni --log_output_level=info`.
//
// The node is the e2e world (test/root/e2e/harness.ts): the hostPaths are its directories (the table in
// nodeFacts), and its network namespace is one this test makes ("node" below), where a stand-in
// for the node's PID 1 lives; the one variable added to the chart's env, HOST_NETNS, names it
// (/host/proc/<that pid>/ns/net instead of /host/proc/1/ns/net), so the agent's host rules land in
// the test's node netns, never in this machine's. Two more things a real node has and the world
// lacks are added and said so: containerd keeps pod netns under its state dir (mounted where
// CNI_NETNS paths resolve under /host), and the agent reaches the API stand-in through a forwarder
// in its pod netns (the API listens on the host's loopback).
//
// Then: the payload lands in the node's CNI bin dir and our entry in the primary conflist;
// /readyz answers in the pod netns; sidecar pods get the capture; ambient pods are enrolled (ZDS
// Add at the ztunnel stand-in, the probe address in the node netns); an upgrade (the container
// replaced by a container of a new image build) keeps existing pods' rules and new pods start; a
// crashed agent (SIGKILL) does not stop pods from starting (the shim's fallback); uninstall
// (SIGTERM with the DaemonSet gone) removes our entry and the payload. Run under
// `flock /tmp/icts-e2e.lock`.
import { after, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { until as untilOrFail } from '../../support/until';
import { makeNetns } from '../../support/root';
import { KubeApiStandIn, Obj } from '../../support/kube-api';
import { makePki } from '../../support/tls';
import { ZtunnelStandIn } from '../../support/ztunnel-standin';
import { AMBIENT_NS_LABEL } from '../../support/ambient-env';
import { PACKAGE_ROOT } from '../../support/conformance';
import { kubeletSandboxConfig } from './cri';
import { E2eWorld, PLUGIN_TYPE, RunningPod, requirePrerequisites, sweepStaleRuns } from './harness';
import { KUBELET_UID, forwardInto, httpGetIn, nftTables, nftText, startKubeletStandIn } from './ambient-node';
import { Manifests, NodeFacts, kubeletContainer, loadManifests } from './kubelet-pod';
import { PodSpecLite, injectedPod, nodePod } from './pods';

const NODE = 'e2e-chart-node';
const IMAGE = 'localhost/istio-cni-ts:0.1.0'; // the manifests' image (chart-rendering.test.ts OUR_IMAGE)
const IMAGE_NEXT = 'localhost/istio-cni-ts:0.1.0-next';
const AMBIENT_NS = 'shop';
const SIDECAR_NS = 'bookinfo';
const DS_PATH = '/apis/apps/v1/namespaces/istio-system/daemonsets/istio-cni-node';
const HEALTH_PORT = 8000;
const T = { timeout: 120_000 };
const RUN_DIR = '/var/run/istio-cni';

interface Node {
  api: KubeApiStandIn;
  netns: ReturnType<typeof makeNetns>;
  init: ChildProcess;
  kubelet: ChildProcess;
  standIn: ZtunnelStandIn;
  zdsDir: string;
  manifests: Manifests;
}
interface AgentPod {
  pod: RunningPod;
  forwarder: ReturnType<typeof forwardInto>;
  container?: string;
  attempt: number;
}

let world: E2eWorld | undefined;
let node: Node | undefined;
let agent: AgentPod | undefined;
const pods = new Map<string, RunningPod>();
const w = () => world ?? assert.fail('the e2e world was not set up');
const n = () => node ?? assert.fail('the node was not set up');
const a = () => agent ?? assert.fail('the agent pod was not started');

/** The one `until`, failing at once (with the agent's log) when the agent container has exited. */
async function until(what: string, f: () => boolean | Promise<boolean>, ms: number, every = 100): Promise<void> {
  await untilOrFail(what, f, ms, every, {
    abort: async () => {
      if (!agent?.container) return undefined;
      const st = await w()
        .cri.containerStatus(agent.container)
        .catch(() => undefined);
      return st && st.state === 'CONTAINER_EXITED' ? `the agent container exited (${st.exit_code})` : undefined;
    },
    detail: () => `:\n${agentLog().slice(-40).join('\n')}`,
  });
}

/** The agent container's log lines (CRI log format: time stream tag message). */
function agentLog(): string[] {
  if (!agent?.container) return [];
  const f = path.join(w().dir, 'pod-logs', `${agent.pod.spec.namespace}_${agent.pod.spec.name}_${agent.pod.spec.uid}`, 'install-cni', `${agent.attempt}.log`);
  try {
    return fs
      .readFileSync(f, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(' ').slice(3).join(' '));
  } catch {
    return [];
  }
}

/** An OCI archive of our image named `tag`, from `npm run image`'s builder. */
function imageArchive(tag: string): string {
  const builder = path.join(PACKAGE_ROOT, 'scripts', 'build-image.js');
  if (!fs.existsSync(builder)) throw new Error(`${builder} is missing: this test needs the image builder (npm run image)`);
  const out = path.join(w().dir, `${tag.replace(/[/:]/g, '_')}.oci.tar`);
  execFileSync(process.execPath, [builder, '--out', out, '--tag', tag], { stdio: ['ignore', 'ignore', 'pipe'], cwd: PACKAGE_ROOT, timeout: 600_000 });
  return out;
}

/**
 * Imports our image as `tag`. ICTS_E2E_IMAGE_ARCHIVE names a prebuilt archive of IMAGE instead of
 * building (a shortcut for development: the "new build" is then that image re-tagged).
 */
async function importImage(tag: string): Promise<void> {
  const ctr = (...args: string[]) =>
    execFileSync('ctr', ['--address', w().ctrd.sock, '--namespace', 'k8s.io', 'images', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const prebuilt = process.env.ICTS_E2E_IMAGE_ARCHIVE;
  if (prebuilt && tag !== IMAGE) ctr('tag', IMAGE, tag);
  else ctr('import', '--all-platforms', '--snapshotter', 'overlayfs', prebuilt ?? imageArchive(tag));
  if (!(await w().cri.imageExists(tag))) throw new Error(`CRI does not see ${tag} after import`);
}

/** A pod as the API holds it, on this node. */
function appPod(name: string, namespace: string, spec?: PodSpecLite): PodSpecLite {
  const s = spec ?? nodePod(name, namespace, NODE);
  const podSpec = (s.pod.spec ??= {});
  podSpec.nodeName = NODE;
  podSpec.serviceAccountName ??= `sa-${name}`;
  n().api.upsert(s.pod as Obj);
  return s;
}

async function startApp(key: string, spec: PodSpecLite): Promise<RunningPod> {
  const p = await w().runPod(spec);
  pods.set(key, p);
  return p;
}

const ruleset = (nsPath: string) => nftText(nsPath);
const zdsAdds = (uid: string) => n().standIn.received.filter((r) => r.kind === 'add' && r.uid === uid);

/** The node facts kubelet would use, for the agent pod. */
function nodeFacts(image: string, attempt: number): NodeFacts {
  const netnsDir = path.dirname(a().pod.netns); // containerd's pod netns dir (in its mount namespace)
  return {
    nodeName: NODE,
    podName: a().pod.spec.name,
    podNamespace: a().pod.spec.namespace,
    hostPaths: {
      '/opt/cni/bin': w().cniBinDir,
      '/proc': '/proc',
      '/etc/cni/net.d': w().cniConfDir,
      '/var/run/istio-cni': RUN_DIR, // in containerd's mount namespace: <containerd dir>/ns-run/istio-cni
      '/var/run/netns': netnsDir,
      '/var/run/ztunnel': n().zdsDir,
    },
    serviceAccountDir: w().saDir,
    apiHost: '127.0.0.1',
    apiPort: n().api.port,
    memoryBytes: os.totalmem(),
    cpus: os.cpus().length,
    image,
    logPath: path.join('install-cni', `${attempt}.log`),
    // containerd's CNI_NETNS paths are under its state dir, not /var/run/netns: where they resolve under /host.
    extraMounts: [{ container_path: `/host${netnsDir}`, host_path: netnsDir, propagation: 'PROPAGATION_HOST_TO_CONTAINER' }],
    // The test node's "PID 1" (its netns is the node's), instead of the machine's.
    extraEnv: { HOST_NETNS: `/host/proc/${n().init.pid}/ns/net` },
  };
}

async function startAgentContainer(image: string): Promise<void> {
  const ag = a();
  ag.attempt = ag.container === undefined ? 0 : ag.attempt + 1;
  const config = kubeletContainer(n().manifests, nodeFacts(image, ag.attempt));
  config.metadata.attempt = ag.attempt;
  const sandbox = kubeletSandboxConfig(ag.pod.spec, path.join(w().dir, 'pod-logs'), `/icts-e2e-${process.pid}`);
  ag.container = await w().cri.createContainer(ag.pod.id, config, sandbox);
  await w().cri.startContainer(ag.container);
}

async function stopAgentContainer(graceS: number): Promise<number> {
  const id = a().container!;
  await w().cri.stopContainer(id, graceS);
  const st = await w().cri.containerStatus(id);
  assert.equal(st.state, 'CONTAINER_EXITED');
  await w().cri.removeContainer(id);
  return st.exit_code;
}

const confTypes = () => (JSON.parse(fs.readFileSync(w().conflist, 'utf8')) as { plugins: { type: string }[] }).plugins.map((p) => p.type);
const readyz = async () => (await httpGetIn(a().pod.nsPath, HEALTH_PORT, '/readyz')).status;

async function probeSet(): Promise<Map<string, string>> {
  const m = new Map<string, string>();
  for (const [, ip, uid] of (await ruleset(n().netns.path)).matchAll(/(\d+\.\d+\.\d+\.\d+) comment "([^"]+)"/g)) m.set(ip, uid);
  return m;
}

after(async () => {
  await agent?.forwarder.close().catch(() => undefined);
  node?.standIn.close();
  for (const c of [node?.init, node?.kubelet]) c?.kill('SIGKILL');
  const problems = await world?.teardown();
  node?.netns.remove();
  await node?.api.close();
  if (problems?.length) process.stderr.write(`e2e teardown cleaned up:\n  ${problems.join('\n  ')}\n`);
});

describe("Istio's chart on a node: our image as a CRI container from the DaemonSet's pod spec", () => {
  test(
    'set up: containerd, the image imported, the API (namespaces, the DaemonSet, the node), the node netns with its PID-1 stand-in, kubelet and ztunnel stand-ins',
    { timeout: 900_000 },
    async () => {
      const refPlugins = requirePrerequisites();
      const swept = sweepStaleRuns();
      if (swept.length) process.stderr.write(`cleaned up after killed e2e runs: ${swept.join(', ')}\n`);
      world = new E2eWorld(refPlugins);
      world.cleanUpOnExit();
      await world.setup({ installPlugin: false });

      const pki = makePki();
      const api = await new KubeApiStandIn(pki).start();
      api.token = `chart-e2e-${process.pid}-${Math.random().toString(36).slice(2)}`;
      fs.writeFileSync(path.join(world.saDir, 'token'), api.token, { mode: 0o600 });
      fs.writeFileSync(path.join(world.saDir, 'ca.crt'), pki.ca);
      fs.writeFileSync(path.join(world.saDir, 'namespace'), 'istio-system');
      for (const ns of ['istio-system', 'kube-system', SIDECAR_NS]) api.upsertNamespace(ns);
      api.upsertNamespace(AMBIENT_NS, AMBIENT_NS_LABEL);
      const manifests = loadManifests('ambient');
      api.objects.set(DS_PATH, manifests.daemonSet as Obj);
      api.objects.set(`/api/v1/nodes/${NODE}`, {
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name: NODE, labels: { 'kubernetes.io/os': 'linux' } },
      } as unknown as Obj);

      const netns = makeNetns('e2e-chart-node');
      process.once('exit', () => netns.remove());
      const init = spawn('nsenter', [`--net=${netns.path}`, '--', 'sleep', '100000'], { stdio: 'ignore' });
      world.daemons.push(init);
      const kubelet = startKubeletStandIn(path.join(world.dir, 'kubelet'));
      world.daemons.push(kubelet);
      const zdsDir = path.join(world.dir, 'ztunnel');
      fs.mkdirSync(zdsDir, { recursive: true });
      node = { api, netns, init, kubelet, zdsDir, manifests, standIn: new ZtunnelStandIn(path.join(zdsDir, 'ztunnel.sock'), { inPod: true }) };
      await until(
        'the node PID-1 stand-in in the node netns',
        () => {
          try {
            return fs.statSync(`/proc/${init.pid}/ns/net`).ino === fs.statSync(netns.path).ino;
          } catch {
            return false;
          }
        },
        5000,
        20,
      );

      // A node's /var/run/netns is a shared mount (HostToContainer needs that: pod netns mounted
      // later must appear in the agent's container). containerd's private mount namespace here has
      // none: make its pod netns dir one.
      const netnsDir = path.join(world.dir, 'containerd', 'state', 'io.containerd.grpc.v1.cri', 'netns');
      fs.mkdirSync(netnsDir, { recursive: true });
      execFileSync('nsenter', [
        `--mount=/proc/${world.ctrd.pid}/ns/mnt`,
        '--',
        'sh',
        '-c',
        'mount --bind "$1" "$1" && mount --make-shared "$1"',
        'sh',
        netnsDir,
      ]);
      // The plugin config names the agent's run dir by its path in the container, /var/run/istio-cni,
      // the same path as on a node; containerd's mount namespace (where the shim runs) has its own
      // /run (<containerd dir>/ns-run), so that path is a directory of the world there.
      fs.mkdirSync(path.join(world.dir, 'containerd', 'ns-run', 'istio-cni'), { recursive: true, mode: 0o750 });

      await importImage(IMAGE);
      await importImage(IMAGE_NEXT);
      assert.deepEqual(confTypes(), ['bridge', 'portmap']);
      assert.ok(!fs.existsSync(path.join(world.cniBinDir, PLUGIN_TYPE)));
    },
  );

  test(
    'the agent container starts from the chart pod spec (its own pod netns) and installs: payload in the bin dir, our entry in the conflist, /readyz 200 in the pod netns, host rule in the node netns',
    T,
    async () => {
      const tpl = n().manifests.daemonSet.spec.template;
      const spec: PodSpecLite = {
        name: 'istio-cni-node-7xk2p',
        namespace: 'istio-system',
        uid: randomUUID(),
        labels: tpl.metadata.labels,
        annotations: tpl.metadata.annotations,
        pod: {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name: 'istio-cni-node-7xk2p', namespace: 'istio-system', labels: tpl.metadata.labels, annotations: tpl.metadata.annotations },
          spec: { containers: [{ name: 'install-cni' }] },
          status: { phase: 'Pending' },
        } as PodSpecLite['pod'],
      };
      spec.pod.metadata!.uid = spec.uid;
      appPod(spec.name, spec.namespace, spec);
      const pod = await w().runPod(spec);
      agent = { pod, forwarder: forwardInto(pod.nsPath, n().api.port, n().api.port), attempt: 0 };
      assert.notEqual(fs.statSync(pod.nsPath).ino, fs.statSync('/proc/self/ns/net').ino, 'a pod netns, not the host network');
      await startAgentContainer(IMAGE);

      await until('our entry in the conflist', () => confTypes().join(',') === `bridge,portmap,${PLUGIN_TYPE}`, 60_000);
      assert.ok(fs.statSync(path.join(w().cniBinDir, PLUGIN_TYPE)).isFile(), 'the payload (shim) in the node CNI bin dir');
      await until('/readyz 200 in the pod netns', async () => (await readyz()) === 200, 60_000, 200);
      const host = await ruleset(n().netns.path);
      assert.match(host, new RegExp(`skuid ${KUBELET_UID} ip daddr @istio-inpod-probes-v4 .*snat (ip )?to 169\\.254\\.7\\.127`), host);
      assert.ok(!(await nftTables(pod.nsPath)).includes('inet istio-ambient-nat'), "no host rule in the agent's own netns");
      assert.ok(!(await nftTables('/proc/self/ns/net')).includes('inet istio-ambient-nat'), "nothing in this machine's nftables");
      const starting = agentLog().find((l) => l.includes('ambient node agent starting')) ?? '';
      assert.match(starting, /switchedToHostNetns[=:"\s]+true/, starting);

      await n().standIn.connect();
      await n().standIn.waitFor(() => n().standIn.snapshots.length >= 1, 10_000, 'the first snapshot');
    },
  );

  test('a sidecar pod gets the capture; an ambient pod is enrolled (ZDS Add, probe address in the node netns, annotation)', T, async () => {
    const sc = await startApp('sidecar-1', appPod('productpage-v1-5f7d2', SIDECAR_NS, injectedPod({ name: 'productpage-v1-5f7d2', namespace: SIDECAR_NS })));
    assert.match(await ruleset(sc.nsPath), /table inet istio-proxy-nat /);
    const spec = appPod('web-1-8c2d1', AMBIENT_NS);
    const amb = await startApp('ambient-1', spec);
    await n().standIn.waitFor(() => zdsAdds(spec.uid).length > 0, 30_000, 'the ZDS Add');
    await until('the probe address in the node netns', async () => (await probeSet()).get(amb.ip) === spec.uid, 10_000);
    assert.equal(n().api.pod(AMBIENT_NS, spec.name)?.metadata.annotations?.['ambient.istio.io/redirection'], 'enabled');
  });

  test(
    'upgrade: SIGTERM with the DaemonSet present keeps everything; a container of a new image build takes over; existing pods keep their rules, new pods start',
    { timeout: 180_000 },
    async () => {
      assert.equal(await stopAgentContainer(5), 0, 'the agent exits 0 on SIGTERM');
      assert.deepEqual(confTypes(), ['bridge', 'portmap', PLUGIN_TYPE], 'entry kept (an upgrade)');
      assert.ok(fs.existsSync(path.join(w().cniBinDir, PLUGIN_TYPE)));
      assert.equal((await probeSet()).get(pods.get('ambient-1')!.ip), pods.get('ambient-1')!.spec.uid, 'probe address kept');
      assert.match(await ruleset(pods.get('sidecar-1')!.nsPath), /table inet istio-proxy-nat /);
      assert.match(await ruleset(pods.get('ambient-1')!.nsPath), /table inet istio-ambient-nat /);

      await startAgentContainer(IMAGE_NEXT);
      await until('/readyz 200 after the upgrade', async () => (await readyz()) === 200, 60_000, 200);
      // ztunnel reconnects to the new agent: its snapshot holds the pod enrolled before the upgrade.
      const before = n().standIn.snapshots.length;
      await n().standIn.connect();
      await n().standIn.waitFor(() => n().standIn.snapshots.length > before, 10_000, 'the snapshot from the new agent');
      assert.ok(n().standIn.snapshots.at(-1)!.includes(pods.get('ambient-1')!.spec.uid), JSON.stringify(n().standIn.snapshots.at(-1)));
      const sc = await startApp('sidecar-2', appPod('reviews-v1-2c8e5', SIDECAR_NS, injectedPod({ name: 'reviews-v1-2c8e5', namespace: SIDECAR_NS })));
      assert.match(await ruleset(sc.nsPath), /table inet istio-proxy-nat /);
      const spec = appPod('web-2-4e9a0', AMBIENT_NS);
      const amb = await startApp('ambient-2', spec);
      await n().standIn.waitFor(() => zdsAdds(spec.uid).length > 0, 30_000, 'the ZDS Add after the upgrade');
      await until('the new probe address', async () => (await probeSet()).get(amb.ip) === spec.uid, 10_000);
    },
  );

  test('the agent killed (SIGKILL): a sidecar pod still starts with its capture (the shim falls back to the standalone plugin)', T, async () => {
    assert.equal(await stopAgentContainer(0), 137, 'killed');
    const sc = await startApp('sidecar-3', appPod('details-v1-9f1b3', SIDECAR_NS, injectedPod({ name: 'details-v1-9f1b3', namespace: SIDECAR_NS })));
    assert.match(await ruleset(sc.nsPath), /table inet istio-proxy-nat /);
    await startAgentContainer(IMAGE_NEXT);
    await until('/readyz 200 again', async () => (await readyz()) === 200, 60_000, 200);
    await n().standIn.connect();
  });

  test('uninstall: SIGTERM with the DaemonSet gone removes our entry, the payload and the host rule', T, async () => {
    n().api.objects.delete(DS_PATH);
    assert.equal(await stopAgentContainer(5), 0);
    assert.deepEqual(confTypes(), ['bridge', 'portmap']);
    assert.ok(!fs.existsSync(path.join(w().cniBinDir, PLUGIN_TYPE)), 'payload removed');
    assert.ok(!(await nftTables(n().netns.path)).includes('inet istio-ambient-nat'), 'host rule and probe sets removed');
    agent!.container = undefined;
  });

  test('teardown: no process, mount, netns or file left behind', { timeout: 60_000 }, async () => {
    for (const p of [...pods.values(), a().pod]) {
      await w().cri.stopPodSandbox(p.id);
      await w().cri.removePodSandbox(p.id);
    }
    await a().forwarder.close();
    for (const c of [n().init, n().kubelet]) {
      c.kill('SIGKILL');
      await new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(undefined) : c.once('exit', r)));
    }
    const problems = await w().teardown();
    assert.deepEqual(problems, []);
  });
});
