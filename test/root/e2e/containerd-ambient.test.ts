// Real runtime, end to end, in ambient mode: the real `istio-cni-ts agent` process with
// AMBIENT_ENABLED=true installs the plugin into a private containerd's CNI config (bridge →
// portmap → istio-cni), and pods in an ambient namespace started through CRI (RunPodSandbox, as
// kubelet calls it) are enrolled: the plugin, run by containerd, hands each pod to the agent over
// pluginevent.sock; the agent applies the in-pod rules in the sandbox's netns, sends ztunnel (the
// stand-in of test/support/ztunnel-standin.ts, which opens its listeners inside each netns it gets)
// an Add with the netns fd, adds the pod IP to the host probe set and patches the pod's
// ambient.istio.io/redirection annotation. Real traffic from the pod reaches the stand-in's 15001
// with its original destination. A pod in a namespace without the label gets nothing. Opting a pod
// out removes its rules; stopping and deleting pods sends ZDS Dels; SIGTERM cleans the host side.
//
// The agent runs as the DaemonSet runs it, in an "agent container" (test/root/e2e/ambient-node.ts): its
// own network namespace (the host rule and probe sets go there, not into this machine's nftables)
// and a private mount namespace with /host = the node's root as containerd sees it. The API
// stand-in (test/support/kube-api.ts: pods, namespaces, list+watch, status patches) is reached
// from that netns through a forwarder on the same 127.0.0.1:<port> the plugin uses.
//
// Needs root and the packages of scripts/install-system-deps.sh; fails (does not skip) without
// them. Everything lives under /tmp/icts-e2e-<pid> (harness.ts) and is removed at the end, also
// when a test fails. See docs/e2e.md.
import { after, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { watchChild } from '../../support/child-lines';
import { makeNetns } from '../../support/root';
import { KubeApiStandIn, Obj } from '../../support/kube-api';
import { makePki } from '../../support/tls';
import { ZtunnelStandIn } from '../../support/ztunnel-standin';
import { AMBIENT_NS_LABEL, SELECTORS_YAML } from '../../support/ambient-env';
import { E2eAgent, agentWaits, stopAgentProcess } from './agent-wait';
import { BIN, E2eRun, PLUGIN_TYPE, RunningPod, agentEnv, assertNothingLeft } from './harness';
import { PodSpecLite, nodePod } from './pods';
import { agentArgs } from '../../support/agent-proc';
import {
  AGENT_NETNS_TAG,
  KUBELET_UID,
  agentContainerArgv,
  forwardInto,
  httpGetIn,
  ipRules,
  nftObjects,
  nftTables,
  nftText,
  probeFrom,
  startKubeletStandIn,
  sweepStaleAgentNetns,
} from './ambient-node';

const T = { timeout: 60_000 };
const NODE = 'e2e-ambient-node';
const AMBIENT_NS = 'shop';
const PLAIN_NS = 'plain';
/** The in-pod tables without DNS capture (istio-ambient-raw only holds the DNS rules). */
const AMBIENT_TABLES = ['inet istio-ambient-mangle', 'inet istio-ambient-nat'];
const HEALTH_PORT = 8000;
const MONITORING_PORT = 15014;
const REFERENCE_PLUGINS = ['bridge', 'host-local', 'loopback', 'portmap'];
const REDIRECTION = 'ambient.istio.io/redirection';

const e2e = new E2eRun();
const { note, w } = e2e;

/** What the set-up test builds around containerd (the agent's node). */
interface AmbientNode {
  api: KubeApiStandIn;
  netns: ReturnType<typeof makeNetns>;
  forwarder: ReturnType<typeof forwardInto>;
  kubelet: ChildProcess;
  standIn: ZtunnelStandIn;
  zdsPath: string;
  rootDir: string;
}
let node: AmbientNode | undefined;

function a(): AgentProc {
  if (!agent) throw new Error('the agent was not started (see the failure of the agent test)');
  return agent;
}
function n(): AmbientNode {
  if (!node) throw new Error('the ambient node was not set up (see the failure of the set-up test)');
  return node;
}

// ---------------------------------------------------------------------------------------------
// The agent process.

type AgentProc = E2eAgent;
let agent: AgentProc | undefined;

/** Waits that fail at once (with its output) if the agent died meanwhile. */
const { until, tail: agentTail } = agentWaits(() => agent);

/**
 * `istio-cni-ts agent` with AMBIENT_ENABLED=true in the agent container: directories as flags (the
 * command line names the state dir, so a killed run's agent is swept up), the rest as the
 * DaemonSet's environment. Health and metrics on their default ports, inside the agent's netns.
 */
function startAgentProcess(): AgentProc {
  const argv = agentContainerArgv({
    netnsPath: n().netns.path,
    rootDir: n().rootDir,
    containerdPid: w().ctrd.pid,
    command: [process.execPath, BIN, 'agent', ...agentArgs(w().agentDirs(w().launcherPayload()))],
  });
  const proc = spawn(argv[0], argv.slice(1), {
    env: agentEnv(n().api.port, {
      NODE_NAME: NODE,
      POD_NAME: 'istio-cni-node-e2e',
      AMBIENT_ENABLED: 'true',
      // The agent's netns plays the node's here (no ALLOW_SWITCH_TO_HOST_NS: it checks they are the same).
      HOST_NETNS: n().netns.path,
      AMBIENT_ENABLEMENT_SELECTOR: SELECTORS_YAML,
      ZTUNNEL_UDS_ADDRESS: n().zdsPath,
    }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  w().daemons.push(proc);
  const ag: AgentProc = watchChild(proc);
  agent = ag;
  return ag;
}

// ---------------------------------------------------------------------------------------------
// Pods.

const podSpec = (name: string, namespace: string): PodSpecLite => nodePod(name, namespace, NODE);

const apiPod = (p: { namespace: string; name: string }) => n().api.pod(p.namespace, p.name);

/** Changes a pod in the API the way its writers would (kubelet's status, a user's label), keeping the rest. */
function updatePod(p: { namespace: string; name: string }, change: (o: Obj) => void): void {
  const o = apiPod(p);
  if (!o) throw new Error(`pod ${p.namespace}/${p.name} is not in the API`);
  change(o);
  n().api.upsert(o);
}

const zdsFor = (uid: string) => n().standIn.received.filter((r) => r.kind !== 'snapshot_sent' && r.kind !== 'unknown' && r.uid === uid);

/** The host probe set (in the agent's netns) as `address comment "uid"` pairs. */
async function probeSetMembers(): Promise<Map<string, string>> {
  const text = await nftText(n().netns.path);
  const m = new Map<string, string>();
  for (const [, ip, uid] of text.matchAll(/(\d+\.\d+\.\d+\.\d+) comment "([^"]+)"/g)) m.set(ip, uid);
  return m;
}

const pods = new Map<string, RunningPod>();
const ambientKeys = ['web-1', 'web-2', 'api-1'];

function pod(key: string): RunningPod {
  const p = pods.get(key);
  if (!p) throw new Error(`pod ${key} is not running (see the failure of the test that starts it)`);
  return p;
}

/** The plugin's own log lines (containerd keeps its stderr) for the pod, as text. */
function pluginLines(p: RunningPod): string[] {
  return w()
    .pluginLog()
    .map((l) => JSON.stringify(l))
    .filter((l) => l.includes(`${p.spec.namespace}/${p.spec.name}`));
}

after(async () => {
  if (agent && !agent.exit) {
    const r = await stopAgentProcess(agent);
    process.stderr.write(`e2e: the ambient agent was still running at the end; stopped (${JSON.stringify(r)})\n`);
  }
  if (agent && e2e.world && process.env.ICTS_E2E_KEEP_LOG === '1') fs.writeFileSync(`${e2e.world.dir}.agent.log`, `${agent.out.join('\n')}\n`);
  if (node) {
    node.standIn.close();
    node.kubelet.kill('SIGKILL');
    await node.forwarder.close();
    await node.api.close();
    node.netns.remove();
  }
  await e2e.end('containerd ambient e2e timings (ms)');
});

describe('containerd: pods in an ambient namespace started through CRI are enrolled end to end by the agent process', () => {
  test(
    'set up: root and tools, containerd with bridge → portmap, API stand-in, agent netns and /host, kubelet and ztunnel stand-ins',
    { timeout: 120_000 },
    async () => {
      const world = e2e.open();
      const missing = ['chroot', 'setpriv', 'sleep'].filter((t) => spawnSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' }).status !== 0);
      if (missing.length) throw new Error(`the containerd ambient e2e test needs ${missing.join(', ')} on PATH (coreutils, util-linux)`);
      const swept = sweepStaleAgentNetns();
      if (swept.length) process.stderr.write(`cleaned up the agent netns of killed e2e runs: ${swept.join(', ')}\n`);
      const t0 = performance.now();
      await world.setup({ installPlugin: false });

      // The API the agent and the plugin use: pods, namespaces, watches, status patches. The
      // world's own pod-GET stand-in is not used; the service account points at this one.
      const pki = makePki();
      const api = await new KubeApiStandIn(pki).start();
      api.token = `ambient-e2e-${process.pid}-${Math.random().toString(36).slice(2)}`;
      fs.writeFileSync(path.join(world.saDir, 'token'), api.token, { mode: 0o600 });
      fs.writeFileSync(path.join(world.saDir, 'ca.crt'), pki.ca);
      api.upsertNamespace('istio-system');
      api.upsertNamespace('kube-system');
      api.upsertNamespace(AMBIENT_NS, AMBIENT_NS_LABEL);
      api.upsertNamespace(PLAIN_NS);

      const netns = makeNetns(AGENT_NETNS_TAG);
      // On exit or a signal (the world's handler exits), also when the after hook never runs.
      process.once('exit', () => netns.remove());
      const zdsDir = path.join(world.dir, 'ztunnel');
      const rootDir = path.join(world.dir, 'agent-root');
      fs.mkdirSync(zdsDir, { recursive: true });
      fs.mkdirSync(rootDir, { recursive: true });
      node = {
        api,
        netns,
        forwarder: forwardInto(netns.path, api.port, api.port),
        kubelet: startKubeletStandIn(path.join(world.dir, 'kubelet')),
        zdsPath: path.join(zdsDir, 'ztunnel.sock'),
        standIn: undefined as unknown as ZtunnelStandIn,
        rootDir,
      };
      node.standIn = new ZtunnelStandIn(node.zdsPath, { inPod: true });
      world.daemons.push(node.kubelet);
      note('setup (CA, image, containerd to CRI-ready, API, agent netns)', performance.now() - t0);

      assert.deepEqual(fs.readdirSync(world.cniBinDir).sort(), REFERENCE_PLUGINS, 'no istio-cni in the bin dir yet');
      assert.deepEqual(await nftTables(netns.path), [], "the agent's netns starts with no rules");
    },
  );

  test(
    'the agent process (AMBIENT_ENABLED=true) starts in its container: host rule and probe sets in its netns, informers, ZDS, plugin chained',
    { timeout: 90_000 },
    async () => {
      const t0 = performance.now();
      const wall0 = Date.now();
      const ag = startAgentProcess();
      await until('"ambient node agent ready" in the agent log', () => ag.out.some((l) => l.includes('ambient node agent ready')), 30_000);
      note('agent start → ambient ready', performance.now() - t0);
      // Where that goes: building the container root and starting Node, then the agent itself (its log's clock).
      const stamp = (f: (l: string) => boolean) => Date.parse(ag.out.find(f)?.split('\t')[0] ?? '');
      const first = stamp((l) => /^\d{4}-\d\d-\d\dT/.test(l));
      note('  of which: spawn → first agent log line (container root, Node start)', first - wall0);
      note('  of which: first agent log line → ambient ready', stamp((l) => l.includes('ambient node agent ready')) - first);
      await until('/readyz 200', async () => (await httpGetIn(n().netns.path, HEALTH_PORT, '/readyz')).status === 200, 30_000, 100);
      note('agent start → /readyz 200', performance.now() - t0);

      // It found the kubelet stand-in through /host/proc and runs in its own netns.
      const starting = ag.out.find((l) => l.includes('ambient node agent starting')) ?? '';
      assert.match(starting, new RegExp(`kubeletUid=${KUBELET_UID}\\b`), starting);
      assert.match(starting, /procRoot=\/host\/proc\b/);
      assert.equal(fs.statSync(`/proc/${ag.proc.pid}/ns/net`).ino, fs.statSync(n().netns.path).ino, 'the agent runs in the netns made for it');
      assert.notEqual(fs.statSync(`/proc/${ag.proc.pid}/ns/mnt`).ino, fs.statSync('/proc/self/ns/mnt').ino, 'and in a mount namespace of its own');

      // The host side, in the agent's netns: the host rule (SNAT of kubelet's probes) and the empty sets.
      const host = await nftText(n().netns.path);
      assert.match(
        host,
        new RegExp(`skuid ${KUBELET_UID} ip daddr @istio-inpod-probes-v4 counter packets \\d+ bytes \\d+ snat (ip )?to 169\\.254\\.7\\.127`),
        host,
      );
      assert.doesNotMatch(host, /elements = /, 'no pod in the probe set yet');
      assert.ok(!(await nftTables('/proc/self/ns/net')).includes('inet istio-ambient-nat'), "nothing in this machine's own nftables");

      // Informers: list+watch of this node's pods and of namespaces, with the service account's token.
      const reqs = n().api.requests;
      assert.ok(
        reqs.every((r) => r.authorization === `Bearer ${n().api.token}`),
        'every API request carries the token',
      );
      const listed = (p: string, watch: boolean) => reqs.some((r) => r.method === 'GET' && r.path === p && (r.query.watch === 'true') === watch);
      for (const p of ['/api/v1/pods', '/api/v1/namespaces']) assert.ok(listed(p, false) && listed(p, true), `list and watch ${p}`);
      assert.ok(
        reqs.filter((r) => r.path === '/api/v1/pods').every((r) => r.query.fieldSelector === `spec.nodeName=${NODE}`),
        'pods of this node only',
      );
      assert.ok(n().forwarder.connections() > 0, 'the agent reached the API from its netns');
      assert.deepEqual(w().api.requests, [], "the world's pod-GET stand-in is not used");

      // The CNI config: our entry after the primary's, in ambient mode, with the selectors.
      const conf = JSON.parse(fs.readFileSync(w().conflist, 'utf8')) as { plugins: Record<string, unknown>[] };
      assert.deepEqual(
        conf.plugins.map((p) => p.type),
        ['bridge', 'portmap', PLUGIN_TYPE],
      );
      const entry = conf.plugins[2];
      assert.equal(entry.ambient_enabled, true);
      assert.equal(entry.cni_agent_run_dir, w().agentRunDir);
      assert.equal(JSON.stringify(entry.enablement_selectors).includes('"istio.io/dataplane-mode"'), true);
      assert.equal(fs.statSync(path.join(w().agentRunDir, 'pluginevent.sock')).mode & 0o777, 0o600);

      // ztunnel connects: an empty snapshot.
      await n().standIn.connect();
      await n().standIn.waitFor(() => n().standIn.snapshots.length === 1, 10_000, 'the first snapshot');
      assert.deepEqual(n().standIn.snapshots[0], []);
      await until(
        'ztunnel_connected 1',
        async () => /^ztunnel_connected 1$/m.test((await httpGetIn(n().netns.path, MONITORING_PORT, '/metrics')).body),
        5000,
        50,
      );

      // containerd loads the chained config.
      await until(
        'containerd to load the chained conflist',
        async () => {
          const cni = JSON.parse((await w().cri.statusInfo()).cniconfig ?? '{}') as {
            Networks?: { IFName: string; Config: { Plugins: { Network: { type: string } }[] } }[];
          };
          const types = cni.Networks?.find((x) => x.IFName === 'eth0')?.Config.Plugins.map((p) => p.Network.type) ?? [];
          return types.join(',') === `bridge,portmap,${PLUGIN_TYPE}`;
        },
        10_000,
        50,
      );
    },
  );

  test('three pods of the ambient namespace started through CRI at once are enrolled before RunPodSandbox returns', { timeout: 90_000 }, async () => {
    const specs = ambientKeys.map((k) => podSpec(`${k}-${k.length}f7c`, AMBIENT_NS));
    for (const s of specs) n().api.upsert(s.pod as Obj);
    const enrolledAt = new Map<string, number>();
    const t0 = performance.now();
    const gaveUp = new AbortController();
    const watching = specs.map(async (s) => {
      const { standIn } = n();
      await standIn.waitFor(() => gaveUp.signal.aborted || zdsFor(s.uid).some((r) => r.kind === 'add'), 60_000, `the Add of ${s.name}`);
      if (gaveUp.signal.aborted) return;
      note('RunPodSandbox call → ZDS Add at ztunnel', performance.now() - t0);
      await until(`${s.name} annotated`, () => gaveUp.signal.aborted || apiPod(s)?.metadata.annotations?.[REDIRECTION] === 'enabled', 60_000, 5);
      if (gaveUp.signal.aborted) return;
      enrolledAt.set(s.uid, performance.now() - t0);
      note('RunPodSandbox call → annotation enabled (enrolled)', performance.now() - t0);
    });
    let running: RunningPod[];
    try {
      running = await Promise.all(specs.map((s) => w().runPod(s)));
    } catch (e) {
      gaveUp.abort();
      await Promise.allSettled(watching);
      throw e;
    }
    const ranAt = performance.now() - t0;
    await Promise.all(watching);
    for (const [i, p] of running.entries()) {
      pods.set(ambientKeys[i], p);
      note('RunPodSandbox (3 ambient pods at once)', p.runMs);
      assert.ok(enrolledAt.get(p.spec.uid)! <= ranAt, `${p.spec.name} was enrolled before RunPodSandbox returned (the plugin waits for the agent)`);
      assert.equal((await w().status(p.id)).state, 'SANDBOX_READY');
      assert.match(p.ip, /^10\.253\.7\.\d+$/);
      // kubelet reports the sandbox's IP in the pod status.
      updatePod(p.spec, (o) => (o.status = { phase: 'Running', podIP: p.ip, podIPs: [{ ip: p.ip }] }));
    }
    for (const ms of w().cniAddMs()) note('CNI ADD over the chain (containerd log)', ms);
    for (const p of running) {
      const at = (msg: string) =>
        Date.parse(
          a()
            .out.find((l) => l.includes(`\t${msg}\t`) && l.includes(`pod=${p.spec.namespace}/${p.spec.name} `))
            ?.split('\t')[0] ?? '',
        );
      note('inside the agent: event received → enrolled (agent log)', at('pod added to the mesh') - at('adding pod to the mesh'));
    }

    const gets = (p: string) => n().api.requests.filter((r) => r.method === 'GET' && !r.query.watch && r.path === p).length;
    assert.equal(gets(`/api/v1/namespaces/${AMBIENT_NS}`), 3, 'one GET of the namespace per pod');
    const members = await probeSetMembers();
    for (const p of running) {
      const ref = `${p.spec.namespace}/${p.spec.name}`;
      // The plugin, run by containerd, sent the CNI event (its own log) and the agent took the netns path from it.
      assert.ok(
        pluginLines(p).some((l) => l.includes('ADD: ambient pod handed to the node agent')),
        `${ref}: the plugin handed the pod to the agent`,
      );
      const adding = a().out.find((l) => l.includes('adding pod to the mesh') && l.includes(`pod=${ref}`)) ?? '';
      assert.ok(adding.includes(`netns=${p.netns}`), `${ref}: the agent enrolled it from the event's netns ${p.netns}: ${adding}`);
      assert.ok(
        a().out.some((l) => l.includes('pod added to the mesh') && l.includes(`pod=${ref}`)),
        `${ref}: added`,
      );

      // In-pod rules in the sandbox's netns, and the mark routing.
      const tables = await nftTables(p.nsPath);
      assert.deepEqual(tables, AMBIENT_TABLES, `${ref}: the ambient tables`);
      const rules = JSON.stringify(await nftObjects(p.nsPath));
      for (const port of [15001, 15006]) assert.ok(rules.includes(`"redirect":{"port":${port}}`), `${ref}: redirect to ${port}`);
      assert.match(await ipRules(p.nsPath), /fwmark 0x111\/0xfff lookup 100/);

      // ztunnel got one Add, with the sandbox's netns as the fd, and acked it (the stand-in acks every request).
      const zds = zdsFor(p.spec.uid);
      assert.equal(zds.length, 1, `${ref}: one ZDS message: ${JSON.stringify(zds, (_k, v) => (typeof v === 'bigint' ? String(v) : v))}`);
      const add = zds[0];
      assert.ok(add.kind === 'add');
      assert.deepEqual([add.name, add.namespace, add.serviceAccount], [p.spec.name, AMBIENT_NS, `sa-${p.spec.labels.app}`]);
      assert.equal(add.fdIno, BigInt(p.netnsIno), `${ref}: the fd ztunnel got is the sandbox's netns`);
      assert.ok(n().standIn.workloads.has(p.spec.uid), `${ref}: ztunnel holds it`);

      // The plugin looked the pod up once (with its namespace, below), then handed it over: ADD ends there.
      assert.equal(gets(`/api/v1/namespaces/${AMBIENT_NS}/pods/${p.spec.name}`), 1, `${ref}: one GET of the pod`);

      // The annotation, through a merge patch of pods/status; the probe set holds the pod's IP.
      const patches = n().api.requests.filter((r) => r.method === 'PATCH' && r.path === `/api/v1/namespaces/${AMBIENT_NS}/pods/${p.spec.name}/status`);
      assert.deepEqual(
        patches.map((r) => [r.contentType, JSON.stringify(r.body)]),
        [['application/merge-patch+json', JSON.stringify({ metadata: { annotations: { [REDIRECTION]: 'enabled' } } })]],
      );
      assert.equal(apiPod(p.spec)?.metadata.annotations?.[REDIRECTION], 'enabled');
      assert.equal(members.get(p.ip), p.spec.uid, `${ref}: its IP is in the host probe set`);
    }
    assert.match((await httpGetIn(n().netns.path, MONITORING_PORT, '/metrics')).body, /^istio_cni_plugin_requests_total\{response_code="200"\} 3$/m);
  });

  test('a pod of a namespace without the ambient label: no event, no rules, no ZDS message, no annotation', T, async () => {
    const spec = podSpec('legacy-1-9d2e', PLAIN_NS);
    n().api.upsert(spec.pod as Obj);
    const nReq = n().api.requests.length;
    const p = await w().runPod(spec);
    pods.set('plain', p);
    note('RunPodSandbox (non-ambient pod)', p.runMs);
    updatePod(spec, (o) => (o.status = { phase: 'Running', podIP: p.ip, podIPs: [{ ip: p.ip }] }));
    assert.equal((await w().status(p.id)).state, 'SANDBOX_READY');
    // The plugin looked and let it pass: ambient detection GETs the pod and its namespace, then the
    // sidecar path GETs the pod once more (as upstream's CmdAdd: isAmbientPod, then getK8sPodInfo).
    const looked = n()
      .api.requests.slice(nReq)
      .filter((r) => r.method === 'GET' && !r.query.watch)
      .map((r) => r.path);
    assert.deepEqual(looked.sort(), [`/api/v1/namespaces/${PLAIN_NS}`, ...Array(2).fill(`/api/v1/namespaces/${PLAIN_NS}/pods/${spec.name}`)]);
    assert.ok(pluginLines(p).some((l) => l.includes('ambient: pod not ambient enabled, ignoring')));
    await sleep(300); // anything the agent would do on the pod's update has had its chance
    assert.deepEqual(await nftTables(p.nsPath), [], 'no rules in its netns');
    assert.deepEqual(zdsFor(spec.uid), [], 'no ZDS message for it');
    assert.equal(apiPod(spec)?.metadata.annotations?.[REDIRECTION], undefined);
    assert.ok(!(await probeSetMembers()).has(p.ip));
    assert.ok(!a().out.some((l) => l.includes(`pod=${PLAIN_NS}/${spec.name}`) && l.includes('mesh')), 'the agent did not act on it');
    // Its app, for the traffic test.
    await w().startProbe(p.nsPath, 8080, 'app-plain');
  });

  test('traffic: outbound from each ambient pod reaches ztunnel 15001 in its netns with the original destination; inbound reaches 15006', T, async () => {
    const plain = pod('plain');
    for (const k of ambientKeys) {
      const p = pod(k);
      const out = await probeFrom(p.nsPath, plain.ip, 8080);
      assert.equal(out.label, 'ztunnel-outbound', `${k}: ${JSON.stringify(out)}`);
      assert.equal(out.uid, p.spec.uid, 'the listener opened in this pod netns');
      assert.equal(out.local?.port, 15001);
      assert.deepEqual(out.origDst && { address: out.origDst.address, port: out.origDst.port }, { address: plain.ip, port: 8080 });
      const inbound = await probeFrom(plain.nsPath, p.ip, 9080);
      assert.equal(inbound.label, 'ztunnel-inbound', `${k} inbound: ${JSON.stringify(inbound)}`);
      assert.equal(inbound.uid, p.spec.uid);
      assert.deepEqual(inbound.origDst && { address: inbound.origDst.address, port: inbound.origDst.port }, { address: p.ip, port: 9080 });
    }
  });

  test(
    'opting a pod out (label dataplane-mode=none): ZDS Del, in-pod rules and routes removed, annotation and probe address gone, traffic direct',
    T,
    async () => {
      const p = pod('web-1');
      const t0 = performance.now();
      updatePod(p.spec, (o) => (o.metadata.labels = { ...o.metadata.labels, 'istio.io/dataplane-mode': 'none' }));
      await n().standIn.waitFor(() => zdsFor(p.spec.uid).some((r) => r.kind === 'del'), 10_000, 'the Del of web-1');
      note('opt-out label → ZDS Del', performance.now() - t0);
      await until('the annotation removed', () => apiPod(p.spec)?.metadata.annotations?.[REDIRECTION] === undefined, 10_000, 5);
      note('opt-out label → annotation removed', performance.now() - t0);
      assert.deepEqual(
        zdsFor(p.spec.uid).map((r) => r.kind),
        ['add', 'del'],
      );
      assert.ok(!n().standIn.workloads.has(p.spec.uid));
      assert.deepEqual(await nftTables(p.nsPath), [], 'in-pod tables removed');
      assert.doesNotMatch(await ipRules(p.nsPath), /fwmark 0x111/, 'mark rule removed');
      assert.ok(!(await probeSetMembers()).has(p.ip), 'probe address removed');
      const direct = await probeFrom(p.nsPath, pod('plain').ip, 8080);
      assert.equal(direct.label, 'app-plain', `direct again: ${JSON.stringify(direct)}`);
      // The others are untouched.
      for (const k of ['web-2', 'api-1']) assert.deepEqual(await nftTables(pod(k).nsPath), AMBIENT_TABLES, k);
    },
  );

  test('pods stopped, removed and deleted as kubelet does: ZDS Del for the enrolled ones, probe set emptied, netns released', { timeout: 90_000 }, async () => {
    w().stopProbes();
    for (const [key, p] of pods) {
      const wasEnrolled = key === 'web-2' || key === 'api-1';
      await w().cri.stopPodSandbox(p.id);
      await w().cri.removePodSandbox(p.id);
      assert.ok(!fs.existsSync(p.nsPath), `${key}: netns mount removed`);
      const t0 = performance.now();
      n().api.remove(p.spec.namespace, p.spec.name);
      if (wasEnrolled) {
        await n().standIn.waitFor(() => zdsFor(p.spec.uid).some((r) => r.kind === 'del'), 10_000, `the Del of ${key}`);
        note('API delete → ZDS Del', performance.now() - t0);
        assert.deepEqual(
          zdsFor(p.spec.uid).map((r) => r.kind),
          ['add', 'del'],
          key,
        );
        assert.ok(!n().standIn.workloads.has(p.spec.uid), `${key}: ztunnel let go of its netns`);
        await until(`${key} out of the probe set`, async () => !(await probeSetMembers()).has(p.ip), 5000, 20);
        assert.ok(
          a().out.some((l) => l.includes('removing pod from the mesh') && l.includes(`pod=${p.spec.namespace}/${p.spec.name}`) && l.includes('deleted=true')),
          key,
        );
      }
      w().release(p);
    }
    await sleep(300);
    assert.deepEqual(zdsFor(pod('plain').spec.uid), [], 'never a ZDS message for the non-ambient pod');
    assert.deepEqual(
      zdsFor(pod('web-1').spec.uid).map((r) => r.kind),
      ['add', 'del'],
      'no second Del for the pod opted out',
    );
    assert.deepEqual([...(await probeSetMembers()).keys()], [], 'probe set empty');
    assert.equal(n().standIn.workloads.size, 0);
    assert.deepEqual(await w().cri.listPodSandbox(), []);
    assert.deepEqual(w().allocatedIps(), []);
    pods.clear();
  });

  test('SIGTERM: the agent exits 0, removes the host rule and probe sets, its sockets and our CNI entry', T, async () => {
    const ag = a();
    const r = await stopAgentProcess(ag);
    note('SIGTERM → agent exited', r.ms);
    assert.deepEqual([r.code, r.signal], [0, null], `the agent exits 0 on SIGTERM${agentTail()}`);
    assert.ok(
      ag.out.some((l) => l.includes('removing the host rule and probe sets')),
      'not an upgrade: host side cleaned',
    );
    assert.deepEqual(await nftTables(n().netns.path), [], "the agent's netns has no rules left");
    await n().standIn.waitFor(() => n().standIn.disconnectedByAgent, 5000, 'the agent closing the ZDS connection');
    assert.deepEqual(JSON.parse(fs.readFileSync(w().conflist, 'utf8')), JSON.parse(w().primaryConflist()), 'the primary conflist again');
    assert.deepEqual(fs.readdirSync(w().cniBinDir).sort(), REFERENCE_PLUGINS, 'the plugin removed');
    const sockets = [w().agentRunDir, path.dirname(n().zdsPath)]
      .flatMap((d) => fs.readdirSync(d).map((f) => path.join(d, f)))
      .filter((f) => fs.lstatSync(f).isSocket());
    assert.deepEqual(sockets, [], 'no socket left (pluginevent.sock, log.sock, ztunnel.sock)');
    assert.equal((await httpGetIn(n().netns.path, HEALTH_PORT, '/readyz')).status, 0, 'health server closed');
    // Its mount namespace (the container root and /host) went with it.
    assert.deepEqual(fs.readdirSync(n().rootDir), [], 'the container root was only ever mounted in the agent mount namespace');
  });

  test('teardown: no process, mount, netns, bridge or file left behind', T, async () => {
    const world0 = w();
    const node0 = n();
    const agentPid = agent?.proc.pid;
    node0.standIn.close();
    node0.kubelet.kill('SIGKILL');
    await node0.forwarder.close();
    await node0.api.close();
    node0.netns.remove();
    node = undefined;
    await assertNothingLeft(world0, 'no process of this run (agent, kubelet stand-in, containerd, shims)');
    if (agentPid) assert.throws(() => process.kill(agentPid, 0), 'the agent is gone');
    assert.ok(!fs.existsSync(node0.netns.path), "the agent's netns is gone");
    assert.deepEqual(
      fs
        .readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .filter((l) => l.includes(world0.dir) || l.includes(node0.netns.name)),
      [],
      'no mount left',
    );
  });
});
