// handleCni end to end with fake dependencies: what each command does to the pod netns, what it
// prints, and which code it fails with.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { KubeError } from '../../src/kube/client';
import { NftError } from '../../src/netns/errors';
import { render } from '../../src/nft/transaction';
import { handleCni } from '../../src/plugin/istio';
import { AmbientBranch } from '../../src/plugin/ports';
import { POD_NETNS, cniEnv, fakes, netconf, sidecarPod } from '../support/cni-fakes';

const PREV = JSON.parse(netconf()).prevResult;

async function run(f: ReturnType<typeof fakes>, command: string, env: Record<string, string | undefined> = {}, conf: Record<string, unknown> = {}) {
  const out = await handleCni(cniEnv(command, env), netconf(conf), f.deps);
  assert.ok(
    f.handles.every((h) => h.refs === 0),
    'every netns handle the request opened is released',
  );
  const doc = out.stdout === '' ? undefined : JSON.parse(out.stdout);
  return { ...out, doc };
}

test('ADD, sidecar pod: the capture transaction is applied in CNI_NETNS and prevResult passes through', async () => {
  const f = fakes([sidecarPod()]);
  const r = await run(f, 'ADD');
  assert.equal(r.exitCode, 0, r.stdout);
  assert.deepEqual(r.doc, PREV);
  assert.equal(f.rules.applied.length, 1);
  assert.equal(f.rules.applied[0].netns, POD_NETNS);
  const text = render(f.rules.applied[0].tx);
  assert.match(text, /redirect to :15001/);
  assert.match(text, /tcp dport 15020 counter return/);
  assert.ok(!text.includes('ip6'), 'IPv4 only in a single-stack netns');
  assert.deepEqual(f.kubeRunDirs, ['/var/run/istio-cni']);
  assert.deepEqual(f.kube.calls, ['shop/web-1']);
  assert.deepEqual(f.rules.routes, [], 'REDIRECT needs no routes');
});

test('ADD, dual-stack pod netns: IPv6 rules and ::6 on lo', async () => {
  const f = fakes([sidecarPod()]);
  f.dualStack.add(POD_NETNS);
  const r = await run(f, 'ADD');
  assert.equal(r.exitCode, 0, r.stdout);
  assert.match(render(f.rules.applied[0].tx), /ip6 saddr ::6\/128/);
  assert.deepEqual(
    f.rules.routes.map((x) => x.plan),
    [{ kind: 'sidecar', loopbackV6: true }],
  );
});

test('ADD, TPROXY pod: rules then policy routing; a routing failure removes the rules again (code 105)', async () => {
  const pod = sidecarPod({ annotations: { 'sidecar.istio.io/interceptionMode': 'TPROXY' } });
  let f = fakes([pod]);
  let r = await run(f, 'ADD');
  assert.equal(r.exitCode, 0, r.stdout);
  assert.match(render(f.rules.applied[0].tx), /tproxy ip to :15006/);
  assert.deepEqual(
    f.rules.routes.map((x) => x.plan),
    [{ kind: 'sidecar', loopbackV6: false, tproxy: { mark: 1337, table: 133, ipv6: false } }],
  );

  f = fakes([pod]);
  f.rules.failRoutes = new Error('RTNETLINK answers: Operation not permitted');
  r = await run(f, 'ADD');
  assert.equal(r.exitCode, 1);
  assert.equal(r.doc.code, 105);
  assert.match(r.doc.details, /Operation not permitted/);
  assert.equal(f.rules.removed.length, 1, 'the tables just applied are removed');
  assert.equal(f.rules.nft.get(POD_NETNS)!.dump(), '');
});

test('ADD, the netns removed while the pod was looked up: the rules went to the held netns, and ADD fails with code 104', async () => {
  const f = fakes([sidecarPod()]);
  const getPod = f.kube.getPod.bind(f.kube);
  f.kube.getPod = async (namespace, name) => {
    f.netns.set(POD_NETNS, 'missing');
    return getPod(namespace, name);
  };
  const r = await run(f, 'ADD');
  assert.equal(r.exitCode, 1);
  assert.equal(r.doc.code, 104);
  assert.equal(r.doc.msg, `network namespace ${POD_NETNS} was removed while ADD ran`);
  assert.equal(f.rules.applied.length, 1, 'applied through the handle opened at the start');
});

test("ADD, nft refuses the transaction: code 105 with nft's message", async () => {
  const f = fakes([sidecarPod()]);
  f.rules.failApply = new Error('Error: Could not process rule: No such file or directory');
  const r = await run(f, 'ADD');
  assert.equal(r.doc.code, 105);
  assert.match(r.doc.msg, /failed to apply nftables rules in \/var\/run\/netns\/pod/);
  assert.match(r.doc.details, /Could not process rule/);
});

test('ADD pass-through without touching the API: own agent pod, excluded namespace, not a Kubernetes pod', async () => {
  for (const [args, why] of [
    ['K8S_POD_NAMESPACE=istio-system;K8S_POD_NAME=istio-cni-node-abcde', 'own-agent-pod'],
    ['IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-1', 'excluded-namespace'],
    ['', 'not-kubernetes'],
  ]) {
    const f = fakes();
    f.kubeconfigError = new Error('kubeconfig missing'); // would fail if the API were needed
    const r = await run(f, 'ADD', { CNI_ARGS: args });
    assert.equal(r.exitCode, 0, `${why}: ${r.stdout}`);
    assert.deepEqual(r.doc, PREV);
    assert.deepEqual(f.kubeRunDirs, [], why);
    assert.equal(f.rules.applied.length, 0);
    assert.ok(
      f.logs.some((l) => l.msg.includes(why)),
      why,
    );
  }
});

test('ADD without prevResult: an empty result of the config version', async () => {
  for (const v of ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']) {
    const f = fakes([sidecarPod()]);
    const r = await run(f, 'ADD', {}, { cniVersion: v, prevResult: undefined });
    assert.equal(r.exitCode, 0, r.stdout);
    assert.deepEqual(r.doc, { cniVersion: v });
  }
});

test('ADD for pods that are not captured: success, nothing applied, the reason logged', async () => {
  const noProxy = sidecarPod();
  noProxy.spec!.containers = [{ name: 'app' }];
  for (const pod of [
    noProxy,
    sidecarPod({ initContainers: ['istio-init'] }),
    sidecarPod({ env: [{ name: 'DISABLE_ENVOY', value: 'true' }] }),
    sidecarPod({ args: ['proxy', 'router'] }),
    sidecarPod({ labels: { 'sidecar.istio.io/inject': 'false' } }),
  ]) {
    const f = fakes([pod]);
    const r = await run(f, 'ADD');
    assert.equal(r.exitCode, 0, r.stdout);
    assert.equal(f.rules.applied.length, 0);
    assert.ok(f.logs.some((l) => l.level === 'info' && l.msg.startsWith('ADD: no sidecar capture')));
  }
});

test('ADD, invalid annotation: code 103 naming the annotation and value, nothing applied', async () => {
  for (const [key, value] of [
    ['traffic.sidecar.istio.io/includeOutboundIPRanges', '10.0.0.0/8; flush ruleset'],
    ['traffic.sidecar.istio.io/excludeInboundPorts', '1,,2'],
    ['traffic.sidecar.istio.io/excludeInterfaces', 'eth 0'],
  ]) {
    const f = fakes([sidecarPod({ annotations: { [key]: value } })]);
    const r = await run(f, 'ADD');
    assert.equal(r.exitCode, 1);
    assert.equal(r.doc.code, 103);
    assert.ok(r.doc.msg.includes(key) && r.doc.msg.includes(JSON.stringify(value)), r.doc.msg);
    assert.match(r.doc.msg, /shop\/web-1/);
    assert.equal(f.rules.applied.length, 0);
  }
});

test("ADD, CNI_NETNS missing or not a netns: code 104; the plugin's own netns: code 8", async () => {
  let f = fakes([sidecarPod()]);
  let r = await run(f, 'ADD', { CNI_NETNS: '/var/run/netns/gone' });
  assert.equal(r.doc.code, 104);
  assert.match(r.doc.details, /does not exist/);
  f = fakes([sidecarPod()]);
  f.netns.set('/tmp', 'not-netns');
  r = await run(f, 'ADD', { CNI_NETNS: '/tmp' });
  assert.equal(r.doc.code, 104);
  assert.match(r.doc.details, /not a network namespace/);
  f = fakes([sidecarPod()]);
  f.netns.set('/proc/1/ns/net', 'own');
  r = await run(f, 'ADD', { CNI_NETNS: '/proc/1/ns/net' });
  assert.equal(r.doc.code, 8);
  assert.equal(f.rules.applied.length, 0);
});

test('ADD, kubeconfig missing or unusable: code 101 (fail closed)', async () => {
  const f = fakes([sidecarPod()]);
  f.kubeconfigError = new Error('kubeconfig /var/run/istio-cni/istio-cni-kubeconfig: does not exist');
  const r = await run(f, 'ADD');
  assert.equal(r.doc.code, 101);
  assert.match(r.doc.details, /does not exist/);
});

test('ADD, API down: 30 attempts 1 s apart (fake clock), then code 11', async () => {
  const f = fakes([sidecarPod()]);
  f.kube.failures = Array.from({ length: 30 }, () => new KubeError('connect ECONNREFUSED 10.96.0.1:443'));
  const r = await run(f, 'ADD');
  assert.equal(r.doc.code, 11);
  assert.match(r.doc.details, /ECONNREFUSED.*after 30 attempts in 29000 ms/);
  assert.equal(f.kube.calls.length, 30);
  assert.deepEqual(f.sleeps, Array(29).fill(1000));
  assert.equal(f.logs.filter((l) => l.level === 'warn' && l.msg.startsWith('pod lookup failed')).length, 1, 'warned once');
});

test('ADD, API answers with an error on every attempt: code 102; a late success is fine', async () => {
  let f = fakes([]);
  let r = await run(f, 'ADD', {}, { pod_lookup_attempts: 3, pod_lookup_interval_ms: 5 });
  assert.equal(r.doc.code, 102);
  assert.match(r.doc.details, /not found/);
  assert.deepEqual(f.sleeps, [5, 5]);
  f = fakes([sidecarPod()]);
  f.kube.failures = [new KubeError('HTTP 503', 503), new KubeError('HTTP 403', 403)];
  r = await run(f, 'ADD');
  assert.equal(r.exitCode, 0, r.stdout);
  assert.equal(f.rules.applied.length, 1);
});

test('ADD, bad CNI_ARGS: code 4; bad plugin key: code 7', async () => {
  let r = await run(fakes(), 'ADD', { CNI_ARGS: 'K8S_POD_NAME=a;SURPRISE=1' });
  assert.equal(r.doc.code, 4);
  assert.match(r.doc.msg, /CNI_ARGS/);
  r = await run(fakes(), 'ADD', {}, { exclude_namespaces: 'kube-system' });
  assert.equal(r.doc.code, 7);
  assert.match(r.doc.msg, /exclude_namespaces/);
});

test('ADD, ambient_enabled: the ambient branch decides', async () => {
  for (const answer of ['handled', 'not-ambient'] as const) {
    const f = fakes([sidecarPod()]);
    const seen: string[] = [];
    const branch: AmbientBranch = {
      add: async (ctx) => {
        seen.push(`${ctx.args.podNamespace}/${ctx.args.podName} ${ctx.prevResult?.ips[0].address}`);
        return answer;
      },
    };
    f.deps.ambient = branch;
    const r = await run(f, 'ADD', {}, { ambient_enabled: true });
    assert.equal(r.exitCode, 0);
    assert.deepEqual(seen, ['shop/web-1 10.0.0.2/24']);
    assert.equal(f.rules.applied.length, answer === 'handled' ? 0 : 1);
  }
});

test('DEL removes our tables and TPROXY routes; repeated DEL and DEL without a netns succeed', async () => {
  const f = fakes([sidecarPod({ annotations: { 'sidecar.istio.io/interceptionMode': 'TPROXY' } })]);
  assert.equal((await run(f, 'ADD')).exitCode, 0);
  assert.notEqual(f.rules.nft.get(POD_NETNS)!.dump(), '');
  for (let i = 0; i < 2; i++) {
    const r = await run(f, 'DEL');
    assert.deepEqual([r.stdout, r.exitCode], ['', 0]);
  }
  assert.equal(f.rules.nft.get(POD_NETNS)!.dump(), '', 'no tables left');
  assert.deepEqual(
    f.rules.removed[0].tables.map((t) => t.table),
    ['istio-proxy-nat', 'istio-proxy-mangle', 'istio-proxy-raw'],
  );
  assert.deepEqual(
    f.rules.routesRemoved.map((x) => [x.netns, x.routes]),
    [0, 1].map(() => [POD_NETNS, { kind: 'sidecar', mark: 1337, table: 133 }]),
  );
  // The runtime's second DEL comes with CNI_NETNS="" (or the netns already gone).
  for (const netns of ['', '/var/run/netns/gone']) {
    const r = await run(f, 'DEL', { CNI_NETNS: netns });
    assert.deepEqual([r.stdout, r.exitCode], ['', 0]);
  }
  assert.equal(f.rules.removed.length, 2);
});

test('DEL is best effort: a bad config, bad CNI_ARGS or a failing nft still succeed', async () => {
  let f = fakes();
  let r = await run(f, 'DEL', { CNI_ARGS: 'garbage' }, { exclude_namespaces: 7 });
  assert.deepEqual([r.stdout, r.exitCode], ['', 0]);
  assert.equal(f.rules.removed.length, 1);
  f = fakes();
  f.rules.failRemove = new Error('nft exploded');
  r = await run(f, 'DEL');
  assert.deepEqual([r.stdout, r.exitCode], ['', 0]);
  assert.ok(f.logs.some((l) => l.level === 'warn' && /nft exploded/.test(String(l.fields?.error))));
  // Excluded namespaces were never touched on ADD; DEL leaves them alone too.
  f = fakes();
  r = await run(f, 'DEL', { CNI_ARGS: 'K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=x' });
  assert.equal(f.rules.removed.length, 0);
  // But never in the plugin's own netns.
  f = fakes();
  f.netns.set('/proc/1/ns/net', 'own');
  r = await run(f, 'DEL', { CNI_NETNS: '/proc/1/ns/net' });
  assert.equal(r.doc.code, 8);
  assert.equal(f.rules.removed.length, 0);
});

test('CHECK: passes when the tables are there, code 106 when they are not, nothing to check for skipped pods', async () => {
  const f = fakes([sidecarPod()]);
  assert.equal((await run(f, 'ADD')).exitCode, 0);
  let r = await run(f, 'CHECK');
  assert.deepEqual([r.stdout, r.exitCode], ['', 0]);
  assert.equal((await run(f, 'DEL')).exitCode, 0);
  r = await run(f, 'CHECK');
  assert.equal(r.doc.code, 106);
  assert.match(r.doc.details, /inet istio-proxy-nat/);
  r = await run(f, 'CHECK', { CNI_ARGS: 'K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=x' });
  assert.equal(r.exitCode, 0);
  r = await run(f, 'CHECK', { CNI_NETNS: '/var/run/netns/gone' });
  assert.equal(r.doc.code, 104);
  r = await run(f, 'CHECK', {}, { cniVersion: '0.3.1' });
  assert.equal(r.doc.code, 1);
});

test('STATUS: ready when the kubeconfig is usable, else code 50; GC: nothing to collect', async () => {
  const f = fakes();
  const status = (conf = {}) => handleCni({ CNI_COMMAND: 'STATUS' }, netconf({ cniVersion: '1.1.0', ...conf }), f.deps);
  assert.deepEqual(await status(), { stdout: '', exitCode: 0 });
  f.kubeconfigError = new Error('kubeconfig /x: does not exist');
  const r = await status();
  assert.equal(r.exitCode, 1);
  assert.deepEqual(JSON.parse(r.stdout), { cniVersion: '1.1.0', code: 50, msg: 'istio-cni-ts cannot service ADD', details: 'kubeconfig /x: does not exist' });
  const gc = await handleCni(
    { CNI_COMMAND: 'GC', CNI_PATH: '/opt/cni/bin' },
    netconf({ cniVersion: '1.1.0', 'cni.dev/valid-attachments': [{ containerID: 'a', ifname: 'eth0' }] }),
    f.deps,
  );
  assert.deepEqual(gc, { stdout: '', exitCode: 0 });
});

test('errors are logged with their code', async () => {
  const f = fakes([sidecarPod({ annotations: { 'traffic.sidecar.istio.io/includeInboundPorts': 'x' } })]);
  const r = await run(f, 'ADD');
  assert.equal(r.doc.code, 103);
  assert.ok(f.logs.some((l) => l.level === 'error' && l.fields?.code === 103));
});

test('re-ADD with another config (TPROXY -> REDIRECT): the fake netns holds exactly what a fresh ADD leaves', async () => {
  const tproxy = sidecarPod({ annotations: { 'sidecar.istio.io/interceptionMode': 'TPROXY' } });
  const f = fakes([tproxy]);
  assert.equal((await run(f, 'ADD')).exitCode, 0);
  assert.match(f.rules.applied[0].sent, /^add table inet istio-proxy-mangle$/m);
  assert.ok(!f.rules.applied[0].sent.includes('delete'), 'a fresh netns gets add-only text');

  // The same pod, now REDIRECT: a second ADD into the same netns (a runtime retry).
  f.kube.put(sidecarPod());
  assert.equal((await run(f, 'ADD')).exitCode, 0);
  const sent = f.rules.applied[1].sent;
  assert.match(sent, /^delete table inet istio-proxy-mangle$/m);

  const fresh = fakes([sidecarPod()]);
  assert.equal((await run(fresh, 'ADD')).exitCode, 0);
  assert.equal(f.rules.nft.get(POD_NETNS)!.dump(), fresh.rules.nft.get(POD_NETNS)!.dump());
});

test('ADD, the netns vanishes between the listing and the apply: code 104, not 105', async () => {
  const f = fakes([sidecarPod()]);
  f.rules.failApply = new NftError('cannot open /var/run/netns/pod: No such file or directory', 'ENOENT', POD_NETNS, '', '');
  const r = await run(f, 'ADD');
  assert.equal(r.exitCode, 1);
  assert.equal(r.doc.code, 104);
  assert.match(r.doc.details, /No such file or directory/);
});
