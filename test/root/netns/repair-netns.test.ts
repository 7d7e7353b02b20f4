// Repair mode on the real kernel (root): two "pods", each a network namespace with an address on
// a veth interface and sleeping processes in it; pod A's processes also sit in a cgroup named
// like a kubelet's (pod<UID>/<container>). The finder locates each netns through the real /proc
// (A by cgroup + IP, B by IP alone), names it through its oldest process, and the repairer
// programs the sidecar tables there and nowhere else. Then the agent process, in repair mode
// against the local API stand-in, repairs pod B by itself. No packet is sent anywhere: the
// addresses only identify the namespaces.
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { findPodNetns } from '../../../src/agent/repair/netns';
import { netnsRepairer, rtnlProbe } from '../../../src/agent/repair/redirect';
import { realNetns, realRules } from '../../../src/plugin/wiring';
import { SIDECAR_TABLES } from '../../../src/capture/tables';
import { currentNetnsId } from '../../../src/netns/nft';
import { httpGet } from '../../support/http-get';
import { agentDirs, startAgentProcess } from '../../support/agent-proc';
import { KubeApiStandIn, NODE, brokenWaiting, repairPod } from '../../support/kube-api';
import { inNetns, makeNetns, requireRootAndTools } from '../../support/root';
import { makePki } from '../../support/tls';

const TABLES = SIDECAR_TABLES.map((t) => ({ family: t.family, table: t.name }));
// Addresses from the benchmarking range, random per run so that concurrent runs never collide.
const rnd = () => 1 + Math.floor(Math.random() * 250);
const IP_A = `198.18.${rnd()}.${rnd()}`;
const IP_B = `198.19.${rnd()}.${rnd()}`;
const UID_A = `0a0b0c0d-${process.pid.toString(16).padStart(4, '0').slice(-4)}-4000-8000-${Date.now().toString(16).padStart(12, '0').slice(-12)}`;

interface FakePod {
  ns: ReturnType<typeof makeNetns>;
  procs: ChildProcess[];
}

const pods: FakePod[] = [];
const cgroupDirs: string[] = [];

function sleeper(nsName: string): ChildProcess {
  // `ip netns exec` enters the netns and execs: the child's pid is the sleeping process.
  const c = spawn('ip', ['netns', 'exec', nsName, 'sleep', '600'], { stdio: 'ignore' });
  return c;
}

async function waitNetns(pid: number, nsPath: string): Promise<void> {
  const want = fs.statSync(nsPath).ino;
  for (let i = 0; i < 1000; i++) {
    try {
      if (fs.statSync(`/proc/${pid}/ns/net`).ino === want) return;
    } catch {
      // not started yet
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`process ${pid} never entered ${nsPath}`);
}

async function fakePod(tag: string, ip: string): Promise<FakePod> {
  const ns = makeNetns(tag);
  const p: FakePod = { ns, procs: [] };
  pods.push(p);
  // Both ends of a veth pair inside the pod netns: an interface to hold the pod IP, no link out.
  execFileSync('ip', ['-n', ns.name, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0-peer']);
  execFileSync('ip', ['-n', ns.name, 'addr', 'add', `${ip}/32`, 'dev', 'eth0']);
  execFileSync('ip', ['-n', ns.name, 'link', 'set', 'eth0', 'up']);
  // The "pause" process first, then a "container" a little later: the oldest must be chosen.
  for (let i = 0; i < 2; i++) {
    const c = sleeper(ns.name);
    p.procs.push(c);
    await waitNetns(c.pid!, ns.path);
    await new Promise((r) => setTimeout(r, 30));
  }
  return p;
}

/** Moves a process into <hierarchy>/icts-repair-<pid>/kubepods/pod<uid>/<cid>, as kubelet's cgroupfs driver names it. */
function intoPodCgroup(pid: number, uid: string): void {
  const roots = ['/sys/fs/cgroup/pids', '/sys/fs/cgroup/unified', '/sys/fs/cgroup'];
  const errors: string[] = [];
  for (const r of roots) {
    if (!fs.existsSync(path.join(r, 'cgroup.procs'))) continue;
    const top = path.join(r, `icts-repair-${process.pid}`);
    const dir = path.join(top, 'kubepods', `pod${uid}`, 'c0ffee');
    try {
      fs.mkdirSync(dir, { recursive: true });
      cgroupDirs.push(dir, path.dirname(dir), path.dirname(path.dirname(dir)), top);
      fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(pid));
      return;
    } catch (e) {
      errors.push(`${r}: ${(e as Error).message}`);
    }
  }
  throw new Error(`this test needs a writable cgroup hierarchy to place a process in a pod cgroup: ${errors.join('; ') || 'none found'}`);
}

const tablesIn = (nsName: string) => inNetns(nsName, ['nft', 'list', 'tables']);
const hostTables = () => execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' });

let podA: FakePod;
let podB: FakePod;
let hostBefore: string;

before(async () => {
  requireRootAndTools('ip', 'nft', 'sleep');
  hostBefore = hostTables();
  podA = await fakePod('repair-a', IP_A);
  podB = await fakePod('repair-b', IP_B);
  for (const c of podA.procs) intoPodCgroup(c.pid!, UID_A);
});

after(async () => {
  const exits = pods.flatMap((p) =>
    p.procs.map((c) => (c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise((r) => c.once('exit', r)))),
  );
  for (const p of pods) for (const c of p.procs) c.kill('SIGKILL');
  await Promise.all(exits);
  // Deepest first; a cgroup directory goes with rmdir once it has no process.
  for (const d of cgroupDirs) {
    try {
      fs.rmdirSync(d);
    } catch {
      // already gone
    }
  }
  for (const p of pods) p.ns.remove();
});

test('the real /proc: pod A by cgroup + IP, pod B by IP, each named through its oldest process; the host never', async () => {
  const self = currentNetnsId();
  const a = await findPodNetns(repairPod({ name: 'a', podIP: IP_A, uid: UID_A }), { procRoot: '/proc', probe: rtnlProbe() });
  assert.equal(a.via, 'cgroup+ip');
  assert.equal(a.pid, podA.procs[0].pid, 'the oldest process of the netns');
  assert.equal(fs.statSync(a.path).ino, fs.statSync(podA.ns.path).ino);
  const b = await findPodNetns(repairPod({ name: 'b', podIP: IP_B, uid: '00000000-1111-4222-8333-444444444444' }), { procRoot: '/proc', probe: rtnlProbe() });
  assert.equal(b.via, 'ip');
  assert.equal(b.pid, podB.procs[0].pid);
  assert.equal(fs.statSync(b.path).ino, fs.statSync(podB.ns.path).ino);
  assert.equal(currentNetnsId(), self, 'the test process is back in its own netns');
});

test('the repairer programs the sidecar tables in pod A only; the host ruleset is untouched', async () => {
  const r = netnsRepairer({ procRoot: '/proc', probe: rtnlProbe(), netns: realNetns(), rules: realRules(TABLES), env: {} });
  const out = await r.repair(repairPod({ name: 'a', podIP: IP_A, uid: UID_A, initStatus: brokenWaiting }));
  assert.ok(out.outcome === 'repaired');
  assert.ok(out.tables.includes('istio-proxy-nat'));
  const a = tablesIn(podA.ns.name);
  for (const t of out.tables) assert.ok(a.includes(`table inet ${t}`), `${t} in pod A:\n${a}`);
  assert.doesNotMatch(tablesIn(podB.ns.name), /istio-proxy/);
  assert.equal(hostTables(), hostBefore);
  // A pod the plugin would not capture (no sidecar) is skipped, and nothing is entered.
  const noSidecar = repairPod({ name: 'plain', podIP: IP_B, initStatus: brokenWaiting });
  (noSidecar.spec as { containers: unknown[] }).containers = [{ name: 'app' }];
  const skipped = await r.repair(noSidecar);
  assert.equal(skipped.outcome, 'skipped');
  assert.doesNotMatch(tablesIn(podB.ns.name), /istio-proxy/);
});

const get = async (url: string): Promise<string> => (await httpGet(url)).body;

test('the agent process in repair mode repairs the broken pod in its own netns, once', async (t) => {
  const pki = makePki();
  const api = await new KubeApiStandIn(pki).start();
  t.after(() => api.close());
  api.token = 'tok';
  api.upsert(repairPod({ name: 'b', podIP: IP_B, initStatus: brokenWaiting }));
  const a = await startAgentProcess(agentDirs({ api: { caPem: pki.ca, token: 'tok' } }), {
    apiPort: api.port,
    metrics: true,
    configFromEnv: true,
    env: { REPAIR_ENABLED: 'true', REPAIR_REPAIR_PODS: 'true', REPAIR_NODE_NAME: NODE, REPAIR_HOST_PROC_DIR: '/proc' },
  });
  t.after(() => fs.rmSync(a.dirs.root, { recursive: true, force: true }));
  const out = a.out;
  try {
    const metricLine = /^istio_cni_repair_pods_repaired_total\{(?=[^}]*type="repair")(?=[^}]*result="success")[^}]*\} (\d+)/m;
    const start = Date.now();
    let count = 0;
    while (Date.now() - start < 30_000) {
      const text = await get(`http://${a.metrics}/metrics`).catch(() => '');
      count = Number(metricLine.exec(text)?.[1] ?? 0);
      if (count === 1) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(count, 1, out.join('\n'));
    assert.match(tablesIn(podB.ns.name), /table inet istio-proxy-nat/);
    assert.match(out.join('\n'), /pod shop\/b repaired\tnetns=\/proc\/\d+\/ns\/net foundBy=ip/);
    // Status churn of the crash-looping pod: the rules are not applied again.
    const p = api.pod('shop', 'b')!;
    api.upsert({ ...p, status: { ...p.status, message: 'back-off 40s' } });
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(Number(metricLine.exec(await get(`http://${a.metrics}/metrics`))?.[1]), 1);
    assert.equal(hostTables(), hostBefore);
    assert.deepEqual(
      api.requests.filter((r) => r.method !== 'GET'),
      [],
      'repair mode writes nothing to the API',
    );
  } finally {
    assert.equal((await a.stop()).code, 0, out.join('\n'));
  }
});
