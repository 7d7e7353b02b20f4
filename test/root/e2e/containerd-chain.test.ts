// Real runtime, end to end: containerd's CRI plugin runs the CNI chain bridge → portmap →
// istio-cni-ts (our executable, installed as Istio's `istio-cni`, config and kubeconfig written by
// the project's install-cni code) for pods a kubelet would run. The kube API the plugin asks is a
// local HTTPS stand-in. Everything lives under /tmp/icts-e2e-<pid>; containerd runs in a mount
// namespace of its own and is stopped and purged at the end, also when a test fails.
//
// Needs root and the packages of scripts/install-system-deps.sh; fails (does not skip) without them.
import { after, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { processes } from './containerd';
import {
  E2eRun,
  EXCLUDED_NAMESPACES,
  PLUGIN_ENTRY_KEYS,
  PLUGIN_TYPE,
  RunningPod,
  assertNothingLeft,
  eth0,
  referenceRuleset,
  rulesCli,
  ruleset,
} from './harness';
import { sh } from '../../support/root';
import { PodSpecLite, VALIDATION_ARGS, injectedPod, iptablesArgs, plainPod } from './pods';

const T = { timeout: 60_000 };
const e2e = new E2eRun();
const { note, w } = e2e;

const ipRules = (nsPath: string) => sh(['nsenter', `--net=${nsPath}`, 'ip', '-4', 'rule', 'show']);
const table133 = (nsPath: string) => sh(['nsenter', `--net=${nsPath}`, 'ip', '-4', 'route', 'show', 'table', '133']);
const links = (nsPath: string) =>
  (JSON.parse(sh(['nsenter', `--net=${nsPath}`, 'ip', '-j', 'link', 'show'])) as { ifname: string }[]).map((l) => l.ifname).sort();

/**
 * The istio-iptables flags of what the CNI path applies to a default-injected pod (upstream's
 * plugin-dryrun "basic" effective config): the annotation's inbound exclusion first, then
 * 15021 and 15090, and 15020 also excluded from outbound capture.
 */
const CNI_PATH_ARGS = iptablesArgs({
  '-p': '15001',
  '-z': '15006',
  '-u': '1337',
  '-g': '1337',
  '-m': 'REDIRECT',
  '-i': '*',
  '-x': '',
  '-b': '*',
  '-d': '15020,15021,15090',
  '-o': '15020',
});

/** Plugin log lines that name this pod (the plugin logs to stderr; containerd keeps it). */
function pluginLinesFor(spec: PodSpecLite): Record<string, unknown>[] {
  return w()
    .pluginLog()
    .filter((l) => JSON.stringify(l).includes(`${spec.namespace}/${spec.name}`));
}

/** containerd's "TearDown network ... successfully" lines for a sandbox: one per DEL over the chain. */
const teardowns = (id: string) =>
  w()
    .ctrd.logText()
    .split('\n')
    .filter((l) => l.includes(`msg="TearDown network for sandbox \\"${id}\\" successfully"`)).length;

const pods = new Map<string, RunningPod>();
function pod(key: string): RunningPod {
  const p = pods.get(key);
  if (!p) throw new Error(`pod "${key}" is not running (an earlier test failed to start it)`);
  return p;
}

async function run(key: string, spec: PodSpecLite): Promise<RunningPod> {
  w().api.addPod(spec.pod);
  const p = await w().runPod(spec);
  pods.set(key, p);
  note('RunPodSandbox', p.runMs);
  const st = await w().status(p.id);
  assert.equal(st.state, 'SANDBOX_READY');
  assert.match(p.ip, /^10\.253\.7\.\d+$/, 'the pod got its IP from bridge/host-local');
  // containerd takes the pod IP from the result of the whole chain: it can only match the
  // address in the netns if portmap and istio-cni-ts passed bridge's result through intact.
  assert.equal(eth0(p.nsPath).ip, p.ip);
  return p;
}

let cniTimed = false;
function noteCniTimings(): void {
  if (cniTimed || !e2e.world) return;
  cniTimed = true;
  for (const ms of e2e.world.cniAddMs()) note('CNI ADD, whole chain (containerd log)', ms);
}

after(async () => {
  noteCniTimings();
  // Also on failure: nothing may outlive the run.
  await e2e.end('containerd e2e timings (ms)');
});

describe('containerd CRI runs bridge → portmap → istio-cni-ts', () => {
  // A test, not a before hook: a missing prerequisite then counts as a failure, loudly.
  test('set up: root and tools, API stand-in, conflist and kubeconfig, pause image, containerd to CRI-ready', { timeout: 120_000 }, async () => {
    const world = e2e.open();
    const t0 = performance.now();
    await world.setup();
    note('setup (CA, image, containerd to CRI-ready)', performance.now() - t0);
  });

  test('containerd is ready with our chain; the plugin entry and kubeconfig are what install-cni writes', T, async () => {
    const v = await w().cri.version();
    assert.equal(v.runtime_name, 'containerd');
    assert.equal(v.runtime_api_version, 'v1');
    const conds = await w().cri.conditions();
    assert.ok(conds.find((c) => c.type === 'NetworkReady')?.status, `NetworkReady: ${JSON.stringify(conds)}`);
    const conf = JSON.parse(fs.readFileSync(w().conflist, 'utf8'));
    assert.deepEqual(
      conf.plugins.map((p: { type: string }) => p.type),
      ['bridge', 'portmap', PLUGIN_TYPE],
    );
    const entry = conf.plugins[2];
    assert.deepEqual(Object.keys(entry).sort(), PLUGIN_ENTRY_KEYS, 'the keys of the entry install-cni writes');
    assert.deepEqual(entry.exclude_namespaces, EXCLUDED_NAMESPACES);
    assert.equal(entry.cni_agent_run_dir, w().agentRunDir);
    const kubeconfig = fs.readFileSync(`${w().agentRunDir}/istio-cni-kubeconfig`, 'utf8');
    assert.match(kubeconfig, new RegExp(`server: https://127\\.0\\.0\\.1:${w().api.port}\\n`));
    assert.match(kubeconfig, /certificate-authority-data: \S+/);
    assert.ok(kubeconfig.includes(`token: ${w().token}`));
  });

  test('sidecar pod: RunPodSandbox leaves exactly the rules `istio-cni-ts rules` prints for it', T, async () => {
    const spec = injectedPod({ name: 'productpage-v1-7d4f9', namespace: 'bookinfo' });
    const p = await run('sidecar', spec);
    const reqs = w().api.requestsFor(spec.namespace, spec.name);
    assert.deepEqual(
      reqs.map((r) => [r.method, r.authorized, r.status]),
      [['GET', true, 200]],
      'one authorized GET of the pod',
    );
    const got = ruleset(p.nsPath);
    assert.match(got, /table inet istio-proxy-nat /);
    assert.equal(got, referenceRuleset(w().rulesForPod(spec)), 'the pod netns holds what `rules --dry-run --pod` prints for the pod');
    assert.equal(got, referenceRuleset(rulesCli(CNI_PATH_ARGS)), 'and what `rules` prints for the equivalent istio-iptables flags');
    // istio-validation's own istio-iptables args describe the same capture except that the CNI
    // path also keeps 15020 out of outbound capture: same rules once -o 15020 is added, order aside.
    const sorted = (t: string) => t.split('\n').sort().join('\n');
    const validation = [...VALIDATION_ARGS.slice(1).filter((a) => !a.startsWith('--log_output_level')), '-o', '15020'];
    assert.equal(sorted(got), sorted(referenceRuleset(rulesCli(validation))));
    assert.ok(pluginLinesFor(spec).length > 0, 'the plugin logged about this pod');
  });

  test('non-mesh pod: the plugin looks the pod up and leaves its netns without rules', T, async () => {
    const spec = plainPod({ name: 'ratings-v1-5c8b2', namespace: 'bookinfo' });
    const p = await run('plain', spec);
    assert.deepEqual(
      w()
        .api.requestsFor(spec.namespace, spec.name)
        .map((r) => [r.authorized, r.status]),
      [[true, 200]],
    );
    assert.equal(ruleset(p.nsPath), '');
  });

  test('traffic between the two pods: inbound lands on 15006, outbound on 15001, the proxy UID and port 15020 pass', T, async () => {
    const side = pod('sidecar');
    const plain = pod('plain');
    try {
      await w().startProbe(side.nsPath, 15006, 'envoy-inbound', 1337);
      await w().startProbe(side.nsPath, 15001, 'envoy-outbound', 1337);
      await w().startProbe(side.nsPath, 15020, 'pilot-agent-15020', 1337);
      await w().startProbe(plain.nsPath, 8080, 'ratings-8080');
      const inbound = w().probe(plain.nsPath, side.ip, 9080);
      assert.equal(inbound.label, 'envoy-inbound', JSON.stringify(inbound));
      assert.deepEqual(inbound.origDst && { address: inbound.origDst.address, port: inbound.origDst.port }, { address: side.ip, port: 9080 });
      const outbound = w().probe(side.nsPath, plain.ip, 8080);
      assert.equal(outbound.label, 'envoy-outbound', JSON.stringify(outbound));
      assert.deepEqual(outbound.origDst && { address: outbound.origDst.address, port: outbound.origDst.port }, { address: plain.ip, port: 8080 });
      assert.equal(w().probe(side.nsPath, plain.ip, 8080, 1337).label, 'ratings-8080', 'traffic of UID 1337 is not redirected');
      assert.equal(w().probe(plain.nsPath, side.ip, 15020).label, 'pilot-agent-15020', 'excluded inbound port 15020');
    } finally {
      w().stopProbes();
    }
  });

  test('TPROXY sidecar pod with custom annotations and proxy UID: the rules `rules --dry-run --pod` prints, and the mark route', T, async () => {
    const spec = injectedPod({
      name: 'reviews-v2-6b9c7',
      namespace: 'bookinfo',
      proxyUid: 1500,
      annotations: {
        'sidecar.istio.io/interceptionMode': 'TPROXY',
        'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.96.0.0/12,192.168.10.0/24',
        'traffic.sidecar.istio.io/excludeInboundPorts': '15020,9091',
        'traffic.sidecar.istio.io/excludeOutboundPorts': '5432',
      },
    });
    const p = await run('tproxy', spec);
    const got = ruleset(p.nsPath);
    assert.equal(got, referenceRuleset(w().rulesForPod(spec)), 'the pod netns holds what `rules --dry-run --pod` prints for the pod');
    assert.deepEqual(
      [...got.matchAll(/^table (\S+ \S+) /gm)].map((m) => m[1]),
      ['inet istio-proxy-nat', 'inet istio-proxy-mangle'],
    );
    assert.match(got, /meta skuid 1500 /, 'the proxy UID from the istio-proxy securityContext');
    assert.match(got, /tproxy /);
    assert.match(ipRules(p.nsPath), /fwmark 0x539 lookup 133/);
    assert.match(table133(p.nsPath), /^local default dev lo /m);
  });

  test('pod in an excluded namespace: no API call, no rules', T, async () => {
    // A sidecar pod the API would hand out: only the exclusion keeps it from being captured.
    const spec = injectedPod({ name: 'coredns-5d78c', namespace: EXCLUDED_NAMESPACES[0] });
    const n0 = w().api.requests.length;
    const p = await run('excluded', spec);
    assert.equal(w().api.requests.length, n0, `API requests during its RunPodSandbox: ${JSON.stringify(w().api.requests.slice(n0))}`);
    assert.deepEqual(w().api.requestsFor(spec.namespace, spec.name), []);
    assert.equal(ruleset(p.nsPath), '');
    assert.ok(pluginLinesFor(spec).length > 0, 'the plugin ran for the pod (and logged it)');
  });

  test('pod with an invalid annotation fails to start with our message in the runtime error; nothing is left', T, async () => {
    const value = '10.0.0.0/8; flush ruleset';
    const spec = injectedPod({ name: 'details-v1-8f3a1', namespace: 'bookinfo', annotations: { 'traffic.sidecar.istio.io/includeOutboundIPRanges': value } });
    w().api.addPod(spec.pod);
    const ipsBefore = w().allocatedIps();
    const mountsBefore = w().netnsMounts().length;
    const sandboxesBefore = (await w().cri.listPodSandbox()).length;
    const t0 = performance.now();
    await assert.rejects(w().runPod(spec), (e: Error & { details?: string }) => {
      const msg = e.details ?? e.message;
      assert.match(msg, /failed to setup network for sandbox/);
      assert.ok(msg.includes(`plugin type="${PLUGIN_TYPE}"`), msg);
      assert.ok(msg.includes(`traffic.sidecar.istio.io/includeOutboundIPRanges "${value}"`), msg);
      return true;
    });
    note('RunPodSandbox (refused)', performance.now() - t0);
    assert.equal(w().api.requestsFor(spec.namespace, spec.name).length, 1);
    const left = await w().cri.listPodSandbox();
    assert.equal(left.length, sandboxesBefore);
    assert.ok(!left.some((s) => s.metadata.name === spec.name), 'no sandbox left for the refused pod');
    assert.deepEqual(w().allocatedIps(), ipsBefore, 'containerd ran DEL over the chain: the address is released');
    assert.equal(w().netnsMounts().length, mountsBefore, 'its netns is gone');
  });

  for (const key of ['sidecar', 'tproxy', 'plain', 'excluded']) {
    test(`${key} pod: StopPodSandbox and RemovePodSandbox leave nothing behind`, T, async () => {
      const p = pod(key);
      const held = w().heldPath(p);
      const shimBefore = processes().filter((x) => x.cmdline.includes(p.id));
      assert.ok(shimBefore.length > 0, 'a shim serves the sandbox');
      const logBefore = w().pluginLog().length;

      let t0 = performance.now();
      await w().cri.stopPodSandbox(p.id);
      note('StopPodSandbox', performance.now() - t0);
      assert.equal((await w().status(p.id)).state, 'SANDBOX_NOTREADY');
      // The netns is still reachable through our fd: DEL emptied it before containerd let go.
      assert.equal(ruleset(held), '', 'no nft tables left in the pod netns');
      assert.doesNotMatch(ipRules(held), /fwmark/, 'no TPROXY mark rule left');
      assert.equal(spawnSync('nsenter', [`--net=${held}`, 'ip', '-4', 'route', 'show', 'table', '133']).stdout.toString(), '');
      assert.deepEqual(links(held), ['lo'], 'bridge DEL removed eth0');
      assert.ok(!fs.existsSync(p.nsPath), 'containerd removed the netns mount');
      assert.ok(!w().allocatedIps().includes(p.ip), 'host-local released the address');
      assert.equal(teardowns(p.id), 1, 'containerd tore the network down once, through the whole chain');

      t0 = performance.now();
      await w().cri.removePodSandbox(p.id);
      note('RemovePodSandbox', performance.now() - t0);
      assert.ok(!(await w().cri.listPodSandbox()).some((s) => s.id === p.id));
      // containerd 1.6 runs DEL again on remove, with CNI_NETNS="" and no prevResult: it must succeed.
      assert.equal(teardowns(p.id), 2, 'the second DEL (empty CNI_NETNS) succeeded too');
      let stray = processes().filter((x) => x.cmdline.includes(p.id) || x.netNs === p.netnsIno || x.cmdline.includes(w().cniBinDir));
      for (let i = 0; i < 50 && stray.length; i++) {
        await sleep(100);
        stray = processes().filter((x) => x.cmdline.includes(p.id) || x.netNs === p.netnsIno || x.cmdline.includes(w().cniBinDir));
      }
      assert.deepEqual(
        stray.map((x) => x.cmdline),
        [],
        'no shim, pause or plugin process left',
      );
      w().release(p);
      pods.delete(key);
      const dels = w()
        .pluginLog()
        .slice(logBefore)
        .filter((l) => /DEL/.test(String(l.msg)) && l.containerId === p.id);
      assert.ok(dels.length > 0, 'the plugin logged its DEL for this sandbox');
    });
  }

  test('stopping the private containerd leaves no process, mount, bridge or file behind', T, async () => {
    const world0 = w();
    noteCniTimings();
    await assertNothingLeft(world0);
  });
});
