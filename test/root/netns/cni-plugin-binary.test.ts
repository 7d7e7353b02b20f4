// The CNI plugin executable run as a container runtime runs it (CNI_COMMAND, CNI_NETNS=/run/netns/
// <ns>, CNI_ARGS, the network config with prevResult on stdin, a kubeconfig pointing at a local
// HTTPS API stand-in), and the result proved with real traffic between a pod netns and a peer
// netns over a veth pair (probe servers stand in for Envoy, the app and the outside world).
// Needs root; fails loudly without it. Every netns, server and temp dir is removed afterwards.
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Pod } from '../../../src/kube/pod';
import { ApiStandIn, startApiStandIn } from '../../support/kube-api';
import { pluginConf, podCniEnv, sidecarPod } from '../../support/cni-fakes';
import { CniRun, runPlugin } from '../../support/cni-run';
import { makeNetns, netnsTableNames, requireRootAndTools } from '../../support/root';
import { CLIENT, PEER2_V4, PEER_V4, PEER_V6, POD_V4, ProbeReply, Topology, makeTopology, probe, startServer } from '../../support/topology';
import { tempDir } from '../../support/tmp';

const PROXY_UID = 1337;

let api: ApiStandIn;
before(async () => {
  requireRootAndTools('ip', 'nft', 'setpriv', 'openssl');
  api = await startApiStandIn();
});
after(async () => api?.close());

const prevResult = (netns: string) => ({
  cniVersion: '1.0.0',
  interfaces: [{ name: 'eth0', sandbox: netns }],
  ips: [{ address: `${POD_V4}/24`, gateway: PEER_V4, interface: 0 }],
  routes: [{ dst: '0.0.0.0/0' }],
  dns: {},
});

const netconf = (netns: string, over: Record<string, unknown> = {}): string =>
  pluginConf(api.runDir, prevResult(netns), { ambient_enabled: false, native_nftables: true, pod_lookup_attempts: 3, pod_lookup_interval_ms: 50, ...over });

const ref = (pod: Pod) => ({ namespace: pod.metadata!.namespace!, name: pod.metadata!.name! });

async function cni(command: string, netns: string, pod: Pod, over: { env?: Record<string, string>; conf?: Record<string, unknown> } = {}): Promise<CniRun> {
  return runPlugin(podCniEnv(command, netns, ref(pod), over.env), netconf(netns, over.conf));
}

function ok(r: CniRun, what: string): void {
  assert.equal(r.code, 0, `${what}: exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
}

/** The CNI error object, checked to be the only thing on stdout. */
function cniError(r: CniRun): { code: number; msg: string; details: string } {
  assert.equal(r.code, 1, `expected a CNI error: ${r.stdout}${r.stderr}`);
  assert.equal(r.stdout.indexOf('\n'), r.stdout.length - 1, `one line on stdout: ${r.stdout}`);
  return JSON.parse(r.stdout);
}

/** The netns's tables as "family name", sorted. */
const tables = netnsTableNames;

function ipOut(ns: string, ...args: string[]): string {
  return execFileSync('ip', ['-n', ns, ...args], { encoding: 'utf8' });
}

/** A client with its own UID and GID (probe() sets both to one value). */
function probeAs(ns: string, host: string, port: number, uid: number, gid: number): ProbeReply {
  const r = spawnSync(
    'ip',
    ['netns', 'exec', ns, 'setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', process.execPath, CLIENT, host, String(port), 'tcp', '3000'],
    { encoding: 'utf8' },
  );
  return r.status === 0 ? (JSON.parse(r.stdout) as ProbeReply) : ({ error: r.stdout + r.stderr } as ProbeReply);
}

const label = (r: ProbeReply) => r.label ?? `error: ${r.error}`;

describe('default sidecar pod in a dual-stack netns: ADD, traffic, CHECK, DEL, DEL again', () => {
  const pod = sidecarPod({ name: 'default-1', namespace: 'shop' });
  let t: Topology;
  before(async () => {
    t = makeTopology('cnidef', true);
    api.addPod(pod);
    await Promise.all([
      startServer(t, t.pod.name, '0.0.0.0', 15001, 'tcp', 'envoy-outbound', PROXY_UID),
      startServer(t, t.pod.name, '::', 15001, 'tcp', 'envoy-outbound-v6', PROXY_UID),
      startServer(t, t.pod.name, '0.0.0.0', 15006, 'tcp', 'envoy-inbound', PROXY_UID),
      startServer(t, t.pod.name, '0.0.0.0', 9090, 'tcp', 'app-9090'),
      ...[15020, 15021, 15090].map((p) => startServer(t, t.pod.name, '0.0.0.0', p, 'tcp', `agent-${p}`, PROXY_UID)),
      startServer(t, t.peer.name, '0.0.0.0', 8080, 'tcp', 'peer-8080'),
      startServer(t, t.peer.name, '::', 8080, 'tcp', 'peer-8080-v6'),
    ]);
  });
  after(() => t?.remove());

  test('before ADD nothing is redirected', () => {
    assert.equal(label(probe(t.pod.name, PEER_V4, 8080)), 'peer-8080');
    assert.deepEqual(tables(t.pod.name), []);
  });

  test('ADD succeeds and passes prevResult through unchanged', async () => {
    const r = await cni('ADD', t.pod.path, pod);
    ok(r, 'ADD');
    assert.deepEqual(JSON.parse(r.stdout), prevResult(t.pod.path));
    assert.deepEqual(tables(t.pod.name), ['inet istio-proxy-nat']);
    assert.ok(api.requestLines.includes('GET /api/v1/namespaces/shop/pods/default-1'));
    // Dual-stack detected in the netns: IPv6 rules and ::6 on lo.
    assert.match(execFileSync('ip', ['netns', 'exec', t.pod.name, 'nft', 'list', 'ruleset'], { encoding: 'utf8' }), /ip6 daddr/);
    assert.match(ipOut(t.pod.name, '-6', 'addr', 'show', 'dev', 'lo'), /::6\/128/);
  });

  test('outbound from the app lands on 15001 with SO_ORIGINAL_DST = the peer (IPv4 and IPv6)', () => {
    const v4 = probe(t.pod.name, PEER_V4, 8080);
    assert.equal(label(v4), 'envoy-outbound', JSON.stringify(v4));
    assert.deepEqual({ address: v4.origDst?.address, port: v4.origDst?.port }, { address: PEER_V4, port: 8080 });
    const v6 = probe(t.pod.name, PEER_V6, 8080);
    assert.equal(label(v6), 'envoy-outbound-v6', JSON.stringify(v6));
    assert.deepEqual({ address: v6.origDst?.address, port: v6.origDst?.port }, { address: PEER_V6, port: 8080 });
  });

  test('the proxy UID goes straight out', () => {
    assert.equal(label(probe(t.pod.name, PEER_V4, 8080, { uid: PROXY_UID })), 'peer-8080');
  });

  test('inbound lands on 15006 with the original destination; 15020, 15021, 15090 are not captured', () => {
    const r = probe(t.peer.name, POD_V4, 9090);
    assert.equal(label(r), 'envoy-inbound', JSON.stringify(r));
    assert.deepEqual({ address: r.origDst?.address, port: r.origDst?.port }, { address: POD_V4, port: 9090 });
    for (const p of [15020, 15021, 15090]) assert.equal(label(probe(t.peer.name, POD_V4, p)), `agent-${p}`);
  });

  test('CHECK after ADD passes', async () => {
    const r = await cni('CHECK', t.pod.path, pod);
    ok(r, 'CHECK');
    assert.equal(r.stdout, '');
  });

  test('DEL removes the tables; DEL again, and with CNI_NETNS="", succeed; CHECK now fails with code 106', async () => {
    ok(await cni('DEL', t.pod.path, pod), 'DEL');
    assert.deepEqual(tables(t.pod.name), []);
    assert.equal(label(probe(t.pod.name, PEER_V4, 8080)), 'peer-8080', 'nothing redirected any more');
    const again = await cni('DEL', t.pod.path, pod);
    ok(again, 'second DEL');
    const empty = await cni('DEL', '', pod);
    ok(empty, 'DEL with CNI_NETNS=""');
    assert.equal(empty.stdout, '');
    assert.equal(cniError(await cni('CHECK', t.pod.path, pod)).code, 106);
  });
});

describe('TPROXY', () => {
  let t: Topology;
  const noInbound = sidecarPod({
    name: 'tproxy-noin',
    annotations: { 'sidecar.istio.io/interceptionMode': 'TPROXY', 'traffic.sidecar.istio.io/includeInboundPorts': '' },
  });
  const inbound = sidecarPod({
    name: 'tproxy-in',
    annotations: { 'sidecar.istio.io/interceptionMode': 'TPROXY', 'traffic.sidecar.istio.io/includeInboundPorts': '9090' },
  });
  before(async () => {
    t = makeTopology('cnitp', false);
    api.addPod(noInbound);
    api.addPod(inbound);
    await Promise.all([
      startServer(t, t.pod.name, '0.0.0.0', 15001, 'tcp', 'envoy-outbound', PROXY_UID),
      startServer(t, t.pod.name, '0.0.0.0', 15006, 'tproxy', 'envoy-tproxy'),
      startServer(t, t.pod.name, '0.0.0.0', 9090, 'tcp', 'app-9090'),
      startServer(t, t.peer.name, '0.0.0.0', 8080, 'tcp', 'peer-8080'),
    ]);
  });
  after(() => t?.remove());

  test('empty includeInboundPorts: ADD succeeds, no inbound capture and no TPROXY routes, outbound still captured', async () => {
    ok(await cni('ADD', t.pod.path, noInbound), 'ADD');
    // TPROXY keeps its mangle table (connection marks), as Istio's rules do, but nothing jumps to tproxy.
    assert.deepEqual(tables(t.pod.name), ['inet istio-proxy-mangle', 'inet istio-proxy-nat']);
    const ruleset = execFileSync('ip', ['netns', 'exec', t.pod.name, 'nft', 'list', 'ruleset'], { encoding: 'utf8' });
    assert.doesNotMatch(ruleset, /tproxy (ip )?to|jump istio-tproxy|jump istio-inbound/);
    assert.equal(label(probe(t.peer.name, POD_V4, 9090)), 'app-9090');
    const out = probe(t.pod.name, PEER_V4, 8080);
    assert.equal(label(out), 'envoy-outbound');
    assert.equal(out.origDst?.port, 8080);
    assert.doesNotMatch(ipOut(t.pod.name, '-4', 'rule'), /lookup 133/);
    ok(await cni('CHECK', t.pod.path, noInbound), 'CHECK');
  });

  test('with an inbound port: the connection arrives at the transparent listener with its destination intact; DEL removes tables and routes', async () => {
    ok(await cni('ADD', t.pod.path, inbound), 'ADD');
    assert.deepEqual(tables(t.pod.name), ['inet istio-proxy-mangle', 'inet istio-proxy-nat']);
    const r = probe(t.peer.name, POD_V4, 9090);
    assert.equal(label(r), 'envoy-tproxy', JSON.stringify(r));
    assert.deepEqual(r.local, { address: POD_V4, port: 9090 });
    assert.match(ipOut(t.pod.name, '-4', 'rule'), /fwmark 0x539 lookup 133/);
    assert.match(ipOut(t.pod.name, '-4', 'route', 'show', 'table', '133'), /local default dev lo/);
    ok(await cni('DEL', t.pod.path, inbound), 'DEL');
    assert.deepEqual(tables(t.pod.name), []);
    assert.doesNotMatch(ipOut(t.pod.name, '-4', 'rule'), /lookup 133/);
    assert.equal(ipOut(t.pod.name, '-4', 'route', 'show', 'table', '133').trim(), '');
    assert.equal(label(probe(t.peer.name, POD_V4, 9090)), 'app-9090');
  });
});

describe('custom UID/GID (runAsUser/runAsGroup on istio-proxy)', () => {
  let t: Topology;
  const pod = sidecarPod({ name: 'custom-ids', securityContext: { runAsUser: 1500, runAsGroup: 1600 } });
  before(async () => {
    t = makeTopology('cniuid', false);
    api.addPod(pod);
    await Promise.all([
      startServer(t, t.pod.name, '0.0.0.0', 15001, 'tcp', 'envoy-outbound', 1500),
      startServer(t, t.peer.name, '0.0.0.0', 8080, 'tcp', 'peer-8080'),
    ]);
    ok(await cni('ADD', t.pod.path, pod), 'ADD');
  });
  after(() => t?.remove());

  test('IPv4-only netns: no IPv6 rules', () => {
    assert.doesNotMatch(execFileSync('ip', ['netns', 'exec', t.pod.name, 'nft', 'list', 'ruleset'], { encoding: 'utf8' }), /ip6 /);
  });

  test('UID 1500 and GID 1600 go straight out; 1337 is an ordinary app user now', () => {
    assert.equal(label(probeAs(t.pod.name, PEER_V4, 8080, 1500, 1500)), 'peer-8080', 'proxy UID');
    assert.equal(label(probeAs(t.pod.name, PEER_V4, 8080, 2000, 1600)), 'peer-8080', 'proxy GID');
    assert.equal(label(probeAs(t.pod.name, PEER_V4, 8080, 1337, 1337)), 'envoy-outbound', 'the default proxy UID is captured');
    assert.equal(label(probeAs(t.pod.name, PEER_V4, 8080, 2000, 2000)), 'envoy-outbound');
  });
});

describe('excluded CIDRs and ports via annotations', () => {
  let t: Topology;
  const pod = sidecarPod({
    name: 'excluded',
    annotations: {
      'traffic.sidecar.istio.io/excludeOutboundIPRanges': `${PEER2_V4}/32`,
      'traffic.sidecar.istio.io/excludeOutboundPorts': '7070',
      'traffic.sidecar.istio.io/excludeInboundPorts': '9091',
    },
  });
  before(async () => {
    t = makeTopology('cniexcl', false);
    api.addPod(pod);
    await Promise.all([
      startServer(t, t.pod.name, '0.0.0.0', 15001, 'tcp', 'envoy-outbound', PROXY_UID),
      startServer(t, t.pod.name, '0.0.0.0', 15006, 'tcp', 'envoy-inbound', PROXY_UID),
      startServer(t, t.pod.name, '0.0.0.0', 9091, 'tcp', 'app-9091'),
      startServer(t, t.peer.name, '0.0.0.0', 8080, 'tcp', 'peer-8080'),
      startServer(t, t.peer.name, '0.0.0.0', 7070, 'tcp', 'peer-7070'),
    ]);
    ok(await cni('ADD', t.pod.path, pod), 'ADD');
  });
  after(() => t?.remove());

  test('outbound: the excluded CIDR and port go straight out, the rest is captured', () => {
    assert.equal(label(probe(t.pod.name, PEER2_V4, 8080)), 'peer-8080', 'excluded CIDR');
    assert.equal(label(probe(t.pod.name, PEER_V4, 7070)), 'peer-7070', 'excluded port');
    assert.equal(label(probe(t.pod.name, PEER_V4, 8080)), 'envoy-outbound');
  });

  test('inbound: the excluded port reaches the app, others are captured', () => {
    assert.equal(label(probe(t.peer.name, POD_V4, 9091)), 'app-9091');
    assert.equal(label(probe(t.peer.name, POD_V4, 9090)), 'envoy-inbound');
  });
});

describe('bad input through the binary: the right code, the annotation and value named, nothing applied', () => {
  let ns: ReturnType<typeof makeNetns>;
  before(() => {
    ns = makeNetns('cnibad');
  });
  after(() => ns?.remove());

  const badPod = (name: string, key: string, value: string) => {
    const pod = sidecarPod({ name, annotations: { [key]: value } });
    api.addPod(pod);
    return pod;
  };

  test('an nft injection attempt in includeOutboundIPRanges: code 103, and a sentinel table survives', async () => {
    execFileSync('ip', ['netns', 'exec', ns.name, 'nft', 'add table inet icts-sentinel']);
    try {
      const pod = badPod('inject', 'traffic.sidecar.istio.io/includeOutboundIPRanges', '10.0.0.0/8; flush ruleset');
      const e = cniError(await cni('ADD', ns.path, pod));
      assert.equal(e.code, 103);
      assert.ok(e.msg.includes('traffic.sidecar.istio.io/includeOutboundIPRanges') && e.msg.includes('"10.0.0.0/8; flush ruleset"'), e.msg);
      assert.deepEqual(tables(ns.name), ['inet icts-sentinel']);
    } finally {
      execFileSync('ip', ['netns', 'exec', ns.name, 'nft', 'delete table inet icts-sentinel']);
    }
  });

  test('ports "1,,2" and an interface name with a space: code 103, no tables', async () => {
    for (const [name, key, value] of [
      ['ports', 'traffic.sidecar.istio.io/excludeInboundPorts', '1,,2'],
      ['ifname', 'traffic.sidecar.istio.io/excludeInterfaces', 'eth 0'],
    ]) {
      const e = cniError(await cni('ADD', ns.path, badPod(name, key, value)));
      assert.equal(e.code, 103, JSON.stringify(e));
      assert.ok(e.msg.includes(key) && e.msg.includes(JSON.stringify(value)), e.msg);
      assert.deepEqual(tables(ns.name), []);
    }
  });

  test('CNI_IFNAME with a space: code 4 naming the variable; no tables', async () => {
    const e = cniError(await cni('ADD', ns.path, sidecarPod({ name: 'default-1' }), { env: { CNI_IFNAME: 'eth 0' } }));
    assert.equal(e.code, 4);
    assert.match(`${e.msg} ${e.details}`, /CNI_IFNAME/);
    assert.deepEqual(tables(ns.name), []);
  });

  test('a netns that does not exist: code 104 naming it', async () => {
    const missing = `/run/netns/icts-missing-${process.pid}`;
    const e = cniError(await cni('ADD', missing, sidecarPod({ name: 'default-1' })));
    assert.equal(e.code, 104);
    assert.ok(`${e.msg} ${e.details}`.includes(missing), JSON.stringify(e));
    assert.equal(fs.existsSync(missing), false);
  });
});

describe('the Kubernetes API', () => {
  let ns: ReturnType<typeof makeNetns>;
  before(() => {
    ns = makeNetns('cniapi');
  });
  after(() => ns?.remove());

  test('API answering 503: the configured retries, then code 11 (try again later); nothing applied', async () => {
    const pod = sidecarPod({ name: 'default-1' });
    api.failWith = { status: 503, body: () => '{"kind":"Status","message":"etcd is down"}' };
    const before = api.requestLines.length;
    try {
      const r = await cni('ADD', ns.path, pod, { conf: { pod_lookup_attempts: 4, pod_lookup_interval_ms: 100 } });
      const e = cniError(r);
      assert.equal(e.code, 11);
      assert.match(e.details, /HTTP 503 \(etcd is down\).*after 4 attempts/);
      assert.equal(api.requestLines.length - before, 4, 'one GET per attempt');
      assert.ok(r.ms >= 300, `three pauses of 100 ms: ${r.ms} ms`);
    } finally {
      api.failWith = undefined;
    }
    assert.deepEqual(tables(ns.name), []);
  });

  test('API not listening at all: code 11 after the retries', async () => {
    const dir = tempDir(path.join(os.tmpdir(), 'icts-down-'));
    try {
      // Same CA and token, but a port nothing listens on (the stand-in's port, closed: bind then release one).
      const kc = fs
        .readFileSync(path.join(api.runDir, 'istio-cni-kubeconfig'), 'utf8')
        .replace(/server: https:\/\/127\.0\.0\.1:\d+/, 'server: https://127.0.0.1:9');
      fs.writeFileSync(path.join(dir, 'istio-cni-kubeconfig'), kc, { mode: 0o600 });
      const e = cniError(
        await cni('ADD', ns.path, sidecarPod({ name: 'default-1' }), { conf: { cni_agent_run_dir: dir, pod_lookup_attempts: 2, pod_lookup_interval_ms: 10 } }),
      );
      assert.equal(e.code, 11);
      assert.match(e.details, /ECONNREFUSED.*after 2 attempts/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    assert.deepEqual(tables(ns.name), []);
  });

  test('our own agent pod passes through without the API (and without a kubeconfig)', async () => {
    const empty = tempDir(path.join(os.tmpdir(), 'icts-nokc-'));
    const before = api.requestLines.length;
    try {
      const agentPod: Pod = { metadata: { name: 'istio-cni-node-x7k2p', namespace: 'istio-system' }, spec: { containers: [{ name: 'install-cni' }] } };
      const r = await cni('ADD', ns.path, agentPod, { conf: { cni_agent_run_dir: empty } });
      ok(r, 'ADD');
      assert.deepEqual(JSON.parse(r.stdout), prevResult(ns.path));
      assert.equal(api.requestLines.length, before, 'no API request');
      assert.deepEqual(tables(ns.name), []);
    } finally {
      fs.rmSync(empty, { recursive: true, force: true });
    }
  });
});
