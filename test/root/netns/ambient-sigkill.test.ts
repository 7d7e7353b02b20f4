// Fault (issue 8, item 3): the ambient agent SIGKILLed in the middle of enrolling 50 pods, then
// restarted. As root, in network namespaces this test creates: a "node" netns (the host rule and
// probe sets go there), 50 pod netns wired to it, each with a process in a kubelet-style cgroup
// (so a restarted agent finds its netns through /proc), the API stand-in, the ztunnel stand-in.
//
// The agent is a process of its own (test/support/ambient-agent-child.ts) whose "host" netns is
// the node netns (the real host's nftables are never touched). "kubelet" runs the real plugin
// binary's ADD for the 50 pods (in the API without IPs until their ADD succeeded), 10 at a time;
// as soon as the stand-in has received 25 ZDS Adds the agent is SIGKILLed. The ADDs that fail
// (agent gone mid-request, or unreachable) are retried, as kubelet retries a failed sandbox,
// once the agent has been restarted and ztunnel has reconnected. Asserted:
// - the kill hit mid-enrollment (ADDs in flight, some pods not yet enrolled), and left its
//   sockets behind, which do not stop the new agent from serving;
// - the snapshot the restarted agent sends ztunnel names exactly the pods annotated `enabled`
//   when it started, each once, each Add carrying that pod's netns (a Keep only for a pod whose
//   ADD answer was lost: no IPs in the API, so its netns cannot be matched yet), then
//   SnapshotSent, after which ztunnel holds exactly those pods (a half-enrolled one is dropped);
// - in the end every pod is annotated `enabled`, its netns holds exactly the in-pod ruleset
//   (byte-equal to the reference transaction applied once in a fresh netns: no duplicated rule,
//   one set of tables) and one mark rule and route; the node's probe set holds each pod's IP
//   exactly once; ztunnel holds all 50, and a ztunnel reconnect gets a snapshot of all 50, each
//   once, with the right netns;
// - after the agent's SIGINT (full clean-up) and the env's teardown: no process, no netns, no
//   socket of the run is left.
// Figures: docs/reliability.md, section 3.
import assert from 'node:assert/strict';
import { ChildProcess, execFile, execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { buildInpodRules } from '../../../src/ambient/build';
import { parseAmbientConfig, podOverridesFromAnnotations } from '../../../src/ambient/config';
import { PLUGIN_EVENT_SOCKET } from '../../../src/ambient/cni-event';
import { MANGLE, NAT, RAW, PROBE_SET_PREFIX } from '../../../src/ambient/tables';
import { render } from '../../../src/nft/transaction';
import { AmbientEnv, KUBELET_UID, NODE, SELECTORS_YAML, TestPod, ipRules, rulesetText } from '../../support/ambient-env';
import { AmbientChildConfig } from '../../support/ambient-agent-child';
import { alive, onLines } from '../../support/child-lines';
import { requireRootAndTools, sh as shell } from '../../support/root';
import { Received, ZtunnelStandIn } from '../../support/ztunnel-standin';
import { until } from '../../support/until';

const COUNT = 50;
const KILL_AT = 25;
const PARALLEL = 10;
const CHILD_JS = path.join(__dirname, '..', '..', 'support', 'ambient-agent-child.js');

/** AmbientEnv without the in-process agent: the agent runs as a child process (below). */
class ProcessAgentEnv extends AmbientEnv {
  private closed = false;
  override async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await super.close();
  }

  override async start(): Promise<this> {
    requireRootAndTools('ip', 'nft', 'setpriv', 'unshare');
    await this.startNodeAndApi(path.join('/tmp', 'icts-ambkill-'));
    this.standIn = new ZtunnelStandIn(this.zdsPath, { inPod: false });
    return this;
  }

  /**
   * `n` pods as AmbientEnv.addPod wires them (pod eth0 10.251.<i>.2/24, node side 10.251.<i>.1,
   * default route), with one `ip -batch` per pod and one for the node instead of ~8 commands each.
   */
  async addPods(n: number): Promise<TestPod[]> {
    const made: TestPod[] = [];
    const names = Array.from({ length: n }, (_, i) => `icts-${this.tag}-p${i + 1}`);
    await ipBatch(
      [],
      names.map((name) => `netns add ${name}`),
    );
    for (let i = 1; i <= n; i++) {
      const name = names[i - 1];
      const netns = { name, path: `/run/netns/${name}`, remove: () => void spawnSync('ip', ['netns', 'del', name]) };
      const uid = `0000${this.tag.padStart(4, '0').slice(-4)}-0000-4000-8000-${String(i).padStart(12, '0')}`;
      const p: TestPod = { name: `app-${i - 1}`, namespace: 'shop', uid, index: i, netns, ip: `10.251.${i}.2`, nodeIp: `10.251.${i}.1` };
      this.pods.push(p);
      made.push(p);
    }
    await Promise.all(
      made.map((p) =>
        ipBatch(
          ['-n', p.netns.name],
          [
            'link set lo up',
            `link add eth0 type veth peer name av${p.index} netns ${this.node.name}`,
            `addr add ${p.ip}/24 dev eth0`,
            'link set eth0 up',
            `route add default via ${p.nodeIp} dev eth0 onlink`,
          ],
        ),
      ),
    );
    await ipBatch(
      ['-n', this.node.name],
      made.flatMap((p) => [`addr add ${p.nodeIp}/24 dev av${p.index}`, `link set av${p.index} up`]),
    );
    for (const p of made) this.api.upsert(this.podObject(p, {}));
    return made;
  }
}

function ipBatch(global: string[], lines: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = execFile('ip', [...global, '-batch', '-'], { encoding: 'utf8', timeout: 60_000 }, (e, _o, err) =>
      e ? reject(new Error(`ip ${global.join(' ')} -batch: ${err || e.message}`)) : resolve(),
    );
    c.stdin!.end(`${lines.join('\n')}\n`);
  });
}

interface AgentProcess {
  proc: ChildProcess;
  pid: number;
  lines: { level: string; msg: string; fields?: Record<string, unknown> }[];
  stderr: string;
  exit?: { code: number | null; signal: NodeJS.Signals | null };
  exited: Promise<void>;
}

const env = new ProcessAgentEnv();
let pods: TestPod[] = [];
const agents: AgentProcess[] = [];
let cfgFile = '';
const figures: Record<string, unknown> = {};
const t0 = performance.now();

function childConfig(): AmbientChildConfig {
  return {
    env: {
      AMBIENT_ENABLED: 'true',
      AMBIENT_ENABLEMENT_SELECTOR: SELECTORS_YAML,
      AMBIENT_IPV6: 'false',
      AMBIENT_RECONCILE_POD_RULES_ON_STARTUP: 'false',
      CNI_AGENT_RUN_DIR: env.runDir,
      ZTUNNEL_UDS_ADDRESS: env.zdsPath,
      NODE_NAME: NODE,
      EXCLUDE_NAMESPACES: 'kube-system',
      POD_NAMESPACE: 'istio-system',
    },
    apiUrl: env.api.url,
    ca: env.pki.ca,
    token: 'amb-token',
    hostNetns: env.node.path,
    kubeletUid: KUBELET_UID,
  };
}

async function startAgentProcess(): Promise<AgentProcess> {
  // In the host netns (the API stand-in listens on the host's 127.0.0.1); its "host" netns, where
  // the host rule and probe sets go, is the test's node netns (hostNetns).
  const proc = spawn(process.execPath, [CHILD_JS, cfgFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  const a: AgentProcess = { proc, pid: proc.pid ?? 0, lines: [], stderr: '', exited: Promise.resolve() };
  a.exited = new Promise((r) =>
    proc.on('exit', (code, signal) => {
      a.exit = { code, signal };
      r();
    }),
  );
  agents.push(a);
  onLines(proc.stdout!, (l) => {
    try {
      a.lines.push(JSON.parse(l));
    } catch {
      a.lines.push({ level: 'raw', msg: l });
    }
  });
  proc.stderr!.on('data', (c: Buffer) => (a.stderr += c));
  await until('the agent process ready', () => a.lines.some((l) => l.msg === 'child ready') || !!a.exit, 30_000).catch((e) => {
    throw new Error(`${(e as Error).message}: ${a.stderr}${tail(a)}`);
  });
  assert.ok(!a.exit, `the agent process exited ${JSON.stringify(a.exit)}: ${a.stderr}${tail(a)}`);
  return a;
}

const tail = (a: AgentProcess, n = 30) =>
  `\n--- agent ${a.pid} (last ${n} lines) ---\n${a.lines
    .slice(-n)
    .map((l) => `${l.level} ${l.msg} ${JSON.stringify(l.fields ?? {})}`)
    .join('\n')}`;

const sh = (cmd: string[], input?: string) => shell(cmd, input, 20_000);

const shAsync = (cmd: string[]) =>
  new Promise<string>((resolve, reject) =>
    execFile(cmd[0], cmd.slice(1), { encoding: 'utf8', timeout: 20_000 }, (e, out, err) =>
      e ? reject(new Error(`${cmd.join(' ')}: ${err || e.message}`)) : resolve(out),
    ),
  );

/** The in-pod ruleset the agent must leave: its transaction for these settings, applied once in a fresh netns. */
function referenceInpodRuleset(): string {
  const amb = env.config().ambient;
  const cfg = parseAmbientConfig({
    enableIPv6: amb.ipv6,
    redirectDNS: amb.dnsCapture,
    reconcile: amb.reconcilePodRulesOnStartup,
    hostProbeSNATAddress: amb.hostProbeSNATIP,
    hostProbeV6SNATAddress: amb.hostProbeSNATIPv6,
  });
  const text = render(
    buildInpodRules(
      cfg,
      podOverridesFromAnnotations({}, () => undefined),
    ),
  );
  return sh(['unshare', '--net', 'sh', '-c', 'nft -f - && nft list ruleset'], text);
}

/** Within one connection's snapshot (from its first request up to SnapshotSent): UIDs added or kept, in order. */
function snapshotRecords(recs: Received[]): { named: string[]; adds: Extract<Received, { kind: 'add' }>[]; sent: boolean } {
  const named: string[] = [];
  const adds: Extract<Received, { kind: 'add' }>[] = [];
  for (const r of recs) {
    if (r.kind === 'snapshot_sent') return { named, adds, sent: true };
    if (r.kind === 'add') adds.push(r);
    if (r.kind === 'add' || r.kind === 'keep') named.push(r.uid);
  }
  return { named, adds, sent: false };
}

/** kubelet's status update: the pod as the API holds it now (annotations included), with this status. */
function setStatus(p: TestPod, status: Record<string, unknown>): void {
  const o = env.api.pod(p.namespace, p.name);
  assert.ok(o, `${p.name} in the API`);
  o.status = status;
  env.api.upsert(o);
}

const annotatedEnabled = () => pods.filter((p) => env.redirection(p) === 'enabled');
const podIno = (p: TestPod) => fs.statSync(p.netns.path, { bigint: true }).ino;
const dupes = (xs: string[]) => xs.filter((x, i) => xs.indexOf(x) !== i);

before(async () => {
  await env.start();
  cfgFile = path.join(env.runDir, 'agent-child.json');
  fs.writeFileSync(cfgFile, JSON.stringify(childConfig()), { mode: 0o600 });
});

after(async () => {
  for (const a of agents) if (!a.exit) a.proc.kill('SIGKILL');
  await Promise.all(agents.map((a) => a.exited));
  if (process.env.ICTS_DEBUG) for (const a of agents) process.stderr.write(tail(a, 400));
  await env.close();
  process.stdout.write(`ambient SIGKILL figures: ${JSON.stringify(figures)}\n`);
});

/** The real host's ambient tables (there should be none of ours). */
const hostAmbientTables = () =>
  sh(['nft', 'list', 'tables'])
    .split('\n')
    .filter((l) => l.includes('istio-ambient'));

test(
  `the agent SIGKILLed while enrolling ${COUNT} pods, restarted: every pod enrolled exactly once, ztunnel gets a consistent snapshot`,
  { timeout: 150_000 },
  async () => {
    const tSetup = performance.now();
    const realHostBefore = hostAmbientTables();
    pods = await env.addPods(COUNT);
    for (const p of pods) {
      env.withProcess(p);
      // As the API has a pod kubelet is starting: scheduled, no IP before its sandbox's CNI ADD
      // succeeded (so the agent's controller leaves it to the plugin's event).
      setStatus(p, { phase: 'Pending' });
    }
    const reference = referenceInpodRuleset();
    assert.match(reference, new RegExp(`table inet ${NAT} `));
    figures.setupMs = Math.round(performance.now() - tSetup);

    const first = await startAgentProcess();
    await env.connectZtunnel();
    assert.deepEqual(env.standIn.snapshots, [[]], 'the first agent starts with nothing enrolled');

    // "kubelet": ADD for every pod, PARALLEL at a time; a failed ADD is retried once the agent is back.
    let agentBack!: () => void;
    const back = new Promise<void>((r) => (agentBack = r));
    let restarted = false;
    let inFlight = 0;
    let okBeforeKill = 0;
    const failures: { pod: string; attempt: number; afterRestart: boolean; code: number | null; msg: string }[] = [];
    const attempts = new Map<string, number>();
    const queue = [...pods];
    const worker = async () => {
      for (let p = queue.shift(); p; p = queue.shift()) {
        for (let attempt = 1; ; attempt++) {
          attempts.set(p.name, attempt);
          inFlight++;
          const r = await env.cniAdd(p);
          inFlight--;
          if (r.code === 0) {
            if (!restarted) okBeforeKill++;
            // kubelet reports the sandbox's IPs.
            setStatus(p, { phase: 'Running', podIP: p.ip, podIPs: [{ ip: p.ip }] });
            break;
          }
          let msg = r.stdout.trim() || r.stderr.trim();
          try {
            const j = JSON.parse(r.stdout);
            msg = `${j.code} ${j.msg}: ${j.details}`;
          } catch {
            // not a CNI error
          }
          failures.push({ pod: p.name, attempt, afterRestart: restarted, code: r.code, msg: msg.slice(0, 300) });
          if (attempt >= 4) throw new Error(`ADD for ${p.name} failed ${attempt} times: ${JSON.stringify(failures.filter((f) => f.pod === p!.name))}`);
          if (restarted) await new Promise((r2) => setTimeout(r2, 200));
          else await back;
        }
      }
    };
    const tAdds = performance.now();
    const kubelet = Promise.all(Array.from({ length: PARALLEL }, worker));
    kubelet.catch(() => undefined); // awaited below

    // Kill once half the pods reached ztunnel.
    const zdsAdds = () => env.standIn.received.filter((r) => r.kind === 'add').length;
    await env.standIn.waitFor(() => zdsAdds() >= KILL_AT, 60_000, `${KILL_AT} ZDS Adds`);
    first.proc.kill('SIGKILL');
    const atKill = { zdsAdds: zdsAdds(), addsInFlight: inFlight, addsSucceeded: okBeforeKill, msAfterFirstAdd: Math.round(performance.now() - tAdds) };
    await first.exited;
    assert.deepEqual(first.exit, { code: null, signal: 'SIGKILL' });
    // The ADDs in flight end (answered just before the kill, or failed by it) and kubelet has
    // reported the IPs of those that succeeded: the state the new agent starts from.
    await until('the ADDs in flight at the kill to end', () => inFlight === 0, 30_000);
    await new Promise((r) => setTimeout(r, 100)); // an API request of the dead agent already on the wire lands
    const enabledAtRestart = annotatedEnabled()
      .map((p) => p.uid)
      .sort();
    const halfEnrolled = [...env.standIn.workloads.keys()].filter((u) => !enabledAtRestart.includes(u));
    // Enrolled, but the ADD's answer was lost with the agent: kubelet never saw the pod's IPs.
    const enabledWithoutIp = annotatedEnabled()
      .filter((p) => !env.api.pod(p.namespace, p.name)?.status?.podIP)
      .map((p) => p.uid);
    const patched = env.api.requests.filter((r) => r.method === 'PATCH').length;
    figures.atKill = {
      ...atKill,
      annotatedEnabled: enabledAtRestart.length,
      atZtunnelNotAnnotated: halfEnrolled.length,
      enabledWithoutIp: enabledWithoutIp.length,
      apiPatches: patched,
    };
    assert.ok(atKill.addsInFlight > 0, 'ADDs were in flight when the agent died');
    assert.ok(enabledAtRestart.length < COUNT, `killed mid-enrollment (${enabledAtRestart.length} of ${COUNT} annotated)`);
    assert.ok(enabledAtRestart.length > 0, 'some pods were enrolled before the kill');

    // The dead agent's sockets are still there; the restart must not trip over them.
    for (const s of [PLUGIN_EVENT_SOCKET, 'ztunnel.sock']) {
      assert.ok(fs.lstatSync(path.join(env.runDir, s)).isSocket(), `the killed agent left ${s} behind`);
    }
    assert.ok(!alive(first.pid), 'the killed agent is gone');

    const tRestart = performance.now();
    const second = await startAgentProcess();
    const received0 = env.standIn.received.length;
    await env.connectZtunnel();
    figures.restartToSnapshotMs = Math.round(performance.now() - tRestart);
    const snap = snapshotRecords(env.standIn.received.slice(received0));
    assert.ok(snap.sent, 'SnapshotSent');
    assert.deepEqual(dupes(snap.named), [], 'no pod named twice in the snapshot');
    assert.deepEqual([...snap.named].sort(), enabledAtRestart, 'the snapshot names exactly the pods annotated enabled when the agent restarted');
    // Each as an Add with its netns (found through /proc), except a pod the API shows without IPs:
    // its netns cannot be matched to it yet, so it is a Keep (ztunnel keeps what it has).
    const keeps = snap.named.filter((u) => !snap.adds.some((a) => a.uid === u));
    assert.deepEqual(keeps.sort(), enabledWithoutIp.sort(), 'Keeps only for enrolled pods without IPs in the API');
    for (const a of snap.adds) {
      const p = pods.find((x) => x.uid === a.uid)!;
      assert.equal(a.fdIno, podIno(p), `${p.name}: the snapshot's fd is its netns`);
    }
    // ztunnel now holds exactly those: a pod the dead agent had handed to ztunnel but not annotated
    // (half-enrolled) is dropped after SnapshotSent, to be enrolled again by the retried ADD.
    assert.deepEqual([...env.standIn.workloads.keys()].sort(), enabledAtRestart, 'after SnapshotSent ztunnel holds exactly the enrolled pods');
    figures.snapshotAfterRestart = { named: snap.named.length, adds: snap.adds.length, keeps: keeps.length, halfEnrolledDropped: halfEnrolled.length };

    // kubelet retries the failed sandboxes.
    restarted = true;
    agentBack();
    await kubelet;
    figures.addsTotalMs = Math.round(performance.now() - tAdds);
    const addFailures = failures.length;
    figures.failedAdds = addFailures;
    figures.failedAddsAfterRestart = failures.filter((f) => f.afterRestart).length;
    figures.failureKinds = [
      ...new Set(
        failures.map((f) =>
          f.msg
            .replace(/app-\d+/g, 'app-N')
            .replace(/[0-9a-f-]{36}/g, 'UID')
            .slice(0, 120),
        ),
      ),
    ];
    assert.ok(addFailures > 0, 'the kill failed the ADDs in flight');
    assert.deepEqual(
      failures.filter((f) => f.afterRestart),
      [],
      'no ADD failed once the agent was back',
    );
    assert.equal(pods.filter((p) => attempts.has(p.name)).length, COUNT);

    // Every pod enrolled exactly once.
    await until('every pod annotated enabled', () => annotatedEnabled().length === COUNT, 10_000);
    await env.standIn.waitFor(() => pods.every((p) => env.standIn.workloads.has(p.uid)), 10_000, 'all pods at ztunnel');
    const rulesets = await Promise.all(pods.map((p) => shAsync(['ip', 'netns', 'exec', p.netns.name, 'nft', 'list', 'ruleset'])));
    pods.forEach((p, i) => assert.equal(rulesets[i], reference, `${p.name}: exactly the in-pod ruleset, once`));
    const tablesOf = (text: string) =>
      text
        .split('\n')
        .filter((l) => l.startsWith('table '))
        .map((l) => l.split(' ').slice(1, 3).join(' '));
    const refTables = tablesOf(reference);
    assert.ok(refTables.every((t) => [`inet ${NAT}`, `inet ${MANGLE}`, `inet ${RAW}`].includes(t)) && refTables.includes(`inet ${NAT}`), refTables.join());
    for (const [i, p] of pods.entries()) {
      assert.deepEqual(tablesOf(rulesets[i]), refTables, `${p.name}: one set of ambient tables`);
      assert.equal(
        ipRules(p.netns.name, 4)
          .split('\n')
          .filter((l) => /lookup 100\b/.test(l)).length,
        1,
        `${p.name}: one mark rule`,
      );
      assert.equal(sh(['ip', '-n', p.netns.name, 'route', 'show', 'table', '100']).trim().split('\n').length, 1, `${p.name}: one route in table 100`);
    }
    const host = JSON.parse(sh(['ip', 'netns', 'exec', env.node.name, 'nft', '-j', 'list', 'ruleset'])) as {
      nftables: Record<string, { name?: string; family?: string; elem?: unknown[] }>[];
    };
    const hostTables = host.nftables.filter((o) => o.table).map((o) => `${o.table.family} ${o.table.name}`);
    assert.deepEqual(hostTables, [`inet ${NAT}`], 'the node netns has one host table');
    const v4set = host.nftables.find((o) => o.set && o.set.name === `${PROBE_SET_PREFIX}-v4`)?.set;
    assert.ok(v4set, `probe set ${PROBE_SET_PREFIX}-v4 in the node netns: ${JSON.stringify(host.nftables.filter((o) => o.set))}`);
    const elems = JSON.stringify(v4set.elem ?? []);
    for (const p of pods) assert.equal(elems.split(`"${p.ip}"`).length - 1, 1, `${p.name}: its IP once in the probe set`);
    assert.equal((v4set.elem ?? []).length, COUNT, 'the probe set holds the 50 pod IPs and nothing else');
    for (const p of pods) assert.equal(env.standIn.workloads.get(p.uid)?.ino, podIno(p), `${p.name}: ztunnel holds its netns`);
    assert.equal(env.standIn.workloads.size, COUNT);

    // ztunnel reconnecting now gets all 50, once each.
    const received1 = env.standIn.received.length;
    env.standIn.disconnect();
    await env.connectZtunnel();
    const snap2 = snapshotRecords(env.standIn.received.slice(received1));
    assert.ok(snap2.sent);
    assert.deepEqual(dupes(snap2.named), []);
    assert.deepEqual([...snap2.named].sort(), pods.map((p) => p.uid).sort(), 'a reconnecting ztunnel gets all 50');
    for (const a of snap2.adds) assert.equal(a.fdIno, podIno(pods.find((x) => x.uid === a.uid)!));
    figures.snapshotAfterReconnect = snap2.named.length;

    // What the restarted agent did: ZDS Adds per pod after the restart (the pods enrolled before the
    // kill only in its snapshot; a retried pod once, or twice when its enrollment had completed
    // but the ADD's answer was lost).
    const addsAfter = env.standIn.received
      .slice(received0, received1)
      .filter((r) => r.kind === 'add')
      .map((r) => (r as { uid: string }).uid);
    const perPod = new Map<string, number>();
    for (const u of addsAfter) perPod.set(u, (perPod.get(u) ?? 0) + 1);
    figures.zdsAddsAfterRestart = addsAfter.length;
    figures.podsAddedTwiceAfterRestart = [...perPod.values()].filter((n) => n > 1).length;
    figures.agentWarnErrorLines = second.lines.filter((l) => l.level === 'warn' || l.level === 'error').length;

    // SIGINT: the agent stops for good (host rule and probe sets removed), exits 0.
    second.proc.kill('SIGINT');
    await second.exited;
    assert.deepEqual(second.exit, { code: 0, signal: null }, `${second.stderr}${tail(second)}`);
    assert.equal(rulesetText(env.node.name), '', 'the host rule and probe sets are removed');
    assert.deepEqual(hostAmbientTables(), realHostBefore, "the real host's nftables were not touched");
    const sockets = fs.readdirSync(env.runDir).filter((f) => fs.lstatSync(path.join(env.runDir, f)).isSocket());
    assert.deepEqual(sockets, [], 'no socket left in the run dir');
  },
);

test('nothing is left: no agent process, no netns, no process in a pod netns, no run dir', { timeout: 30_000 }, async () => {
  const tag = env.tag;
  const runDir = env.runDir;
  const podPids = pods.map((p) => p.proc?.pid ?? 0);
  // (An agent still running here means the test above failed before stopping it.)
  for (const a of agents) if (!a.exit) a.proc.kill('SIGKILL');
  await Promise.all(agents.map((a) => a.exited));
  await env.close();
  for (const a of agents) assert.ok(!alive(a.pid), `agent ${a.pid} gone`);
  const leftNetns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.includes(`icts-${tag}-`));
  assert.deepEqual(leftNetns, [], 'no netns of this test');
  const strays: string[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').replace(/\0/g, ' ');
      // A pod's process by its pid (netns inodes may be reused by other tests' namespaces by now).
      if (cmd.includes(runDir) || (podPids.includes(Number(d)) && cmd.startsWith('sleep 100000'))) strays.push(`${d}: ${cmd}`);
    } catch {
      // gone
    }
  }
  assert.deepEqual(strays, [], 'no process of this test left (agents, pod processes)');
  assert.ok(!fs.existsSync(runDir), 'run dir removed');
  figures.wholeFileS = Math.round((performance.now() - t0) / 100) / 10;
});
