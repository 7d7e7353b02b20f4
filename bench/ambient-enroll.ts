// Ambient enrollment benchmark (issue 6): pods per second from CNI event to "enrolled and acked",
// against a baseline that applies the same in-pod rules with one `nft -f` exec per pod, in the
// same run; then the agent's RSS with 1000 enrolled pods.
//
// The agent runs in its own process (bench/support/ambient-agent-child.ts) with everything real: the
// local HTTPS API stand-in (pods, namespaces, watches, status patches), pluginevent.sock, the ZDS
// socket with the ztunnel stand-in acking (it opens no listeners here), nftables and netlink in
// fresh network namespaces, and a "node" netns for the host rule and probe sets. Each pod is
// enrolled as the plugin would have it: POST /cmdadd, answered 200 only after the in-pod rules
// and routes are in, ztunnel acked the Add, the probe address is in the host set and the
// annotation is patched.
//
// The baseline does less: per pod one `nsenter --net=<netns> nft -f -` of the in-pod rules as
// Istio's plugin sends them (the golden text: `add table; flush table; ...`, no delete) into a
// fresh netns (no routes, no ZDS, no host set, no API). Both run with the same number of pods in
// flight (default 16, as kubelet starting many pods at once would); the baseline is also run one
// pod at a time. Every line of the report gives the load average it was taken at.
// Needs root, iproute2, nftables, util-linux (nsenter), openssl.
// usage: node dist/bench/ambient-enroll.js [pods=200] [rssPods=1000] [concurrency=16]
import { ChildProcess, execFileSync, fork } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildInpodRules } from '../src/ambient/build';
import { parseAmbientConfig, parsePodOverrides } from '../src/ambient/config';
import { PLUGIN_EVENT_SOCKET } from '../src/ambient/cni-event';
import { parseIp } from '../src/net/ip';
import { render } from '../src/nft/transaction';
import { postCniAddEvent } from '../src/plugin/ambient';
import { nftExec } from './support/netns';
import { load, machine } from './support/stats';
import { AmbientApiStandIn, ZtunnelStandIn, makePki } from './support/testbed';

const N = Number(process.argv[2] ?? 200);
const RSS_PODS = Math.max(N + 1, Number(process.argv[3] ?? 1000)); // pod 0 warms up, pods 1..N are timed
const CONCURRENCY = Number(process.argv[4] ?? 16);
const TAG = `icts-ab${process.pid}`;
const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
const NODE = 'bench-node';
const SELECTORS = `- podSelector:
    matchLabels:
      istio.io/dataplane-mode: ambient
`;

function ipBatch(lines: string[]): void {
  for (let i = 0; i < lines.length; i += 500) {
    execFileSync('ip', ['-force', '-batch', '-'], { input: lines.slice(i, i + 500).join('\n') + '\n', stdio: ['pipe', 'ignore', 'pipe'] });
  }
}

const podNs = (i: number) => `${TAG}-p${i}`;
const baseNs = (i: number) => `${TAG}-b${i}`;
const podIp = (i: number) => `10.${200 + Math.floor(i / 65536)}.${Math.floor(i / 256) % 256}.${i % 256}`;
const podUid = (i: number) => `bbbbbbbb-0000-4000-8000-${String(i).padStart(12, '0')}`;

async function pool<T>(items: T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]);
    }),
  );
}

interface Stats {
  rss: number;
  rssAfterGc: number;
  heapUsed: number;
  enrolled: number;
  cached: number;
  rulesApplied: number;
  hostNftRuns: number;
  zdsRequests: number;
  errors: string[];
}

function ask(child: ChildProcess): Promise<Stats> {
  return new Promise((resolve) => {
    const on = (m: { type: string } & Stats) => {
      if (m.type !== 'stats') return;
      child.off('message', on);
      resolve(m);
    };
    child.on('message', on);
    child.send({ type: 'stats' });
  });
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('needs root');
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'icts-amb-bench-'));
  const pki = makePki();
  const api = await new AmbientApiStandIn(pki).start();
  api.token = 'bench';
  api.upsertNamespace('shop', { 'istio.io/dataplane-mode': 'ambient' });
  const standIn = new ZtunnelStandIn(path.join(runDir, 'ztunnel.sock'));
  let child: ChildProcess | undefined;
  const created: string[] = [];
  try {
    process.stdout.write(`creating ${RSS_PODS} pod netns and ${N} baseline netns...\n`);
    const nsNames = [`${TAG}-node`, ...Array.from({ length: RSS_PODS }, (_, i) => podNs(i)), ...Array.from({ length: N }, (_, i) => baseNs(i))];
    ipBatch(nsNames.map((n) => `netns add ${n}`));
    created.push(...nsNames);
    for (let i = 0; i < RSS_PODS; i++) {
      api.upsert({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: `pod-${i}`, namespace: 'shop', uid: podUid(i), labels: { 'istio.io/dataplane-mode': 'ambient' }, annotations: {} },
        spec: { nodeName: NODE, serviceAccountName: 'default' },
        // As kubelet has it when it runs the CNI ADD: the sandbox has no IP yet.
        status: { phase: 'Pending' },
      });
    }

    const cfgFile = path.join(runDir, 'child.json');
    fs.writeFileSync(
      cfgFile,
      JSON.stringify({
        apiUrl: api.url,
        ca: pki.ca,
        token: 'bench',
        nodeNetns: `/run/netns/${TAG}-node`,
        runDir,
        zdsPath: path.join(runDir, 'ztunnel.sock'),
        nodeName: NODE,
        selectorsYaml: SELECTORS,
        kubeletUid: 0,
      }),
    );
    child = fork(path.join(__dirname, 'support', 'ambient-agent-child.js'), [cfgFile], {
      execArgv: ['--expose-gc'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    await new Promise<void>((resolve, reject) => {
      child!.once('message', () => resolve());
      child!.once('exit', (code) => reject(new Error(`agent exited ${code}`)));
    });
    const idle = await ask(child);
    await standIn.connect();
    await standIn.waitFor(() => standIn.snapshots.length === 1, 10_000, 'snapshot');

    const socket = path.join(runDir, PLUGIN_EVENT_SOCKET);
    const enroll = (i: number) =>
      postCniAddEvent(socket, {
        netns: `/run/netns/${podNs(i)}`,
        podName: `pod-${i}`,
        podNamespace: 'shop',
        ips: [{ interface: 0, address: parseIp(podIp(i))!, prefixLength: 16, gateway: null }],
      });
    // Warm-up outside the measurement: one pod (first TLS handshake, code paths compiled).
    await enroll(0);

    const idx = Array.from({ length: N }, (_, i) => i + 1);
    const cpuAgent0 = cpuMs(child.pid!);
    const cpuSelf0 = cpuMs('self');
    let t0 = process.hrtime.bigint();
    await pool(idx, CONCURRENCY, enroll);
    const agentMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const cpuAgent = cpuMs(child.pid!) - cpuAgent0;
    const cpuStandIns = cpuMs('self') - cpuSelf0;
    const acked = idx.filter((i) => standIn.workloads.has(podUid(i))).length;
    const annotated = idx.filter((i) => api.pod('shop', `pod-${i}`)?.metadata.annotations?.['ambient.istio.io/redirection'] === 'enabled').length;

    const script = render(buildInpodRules(parseAmbientConfig({}), parsePodOverrides({})));
    const loadAgent = load();
    const half = Math.floor(N / 2);
    t0 = process.hrtime.bigint();
    for (let i = 0; i < half; i++) await nftExec(`/run/netns/${baseNs(i)}`, script);
    const serialMs = (Number(process.hrtime.bigint() - t0) / 1e6) * (N / half);
    const cpuChildren0 = cpuMs('self', true);
    t0 = process.hrtime.bigint();
    await pool(
      Array.from({ length: N - half }, (_, i) => half + i),
      CONCURRENCY,
      (i) => nftExec(`/run/netns/${baseNs(i)}`, script),
    );
    const parallelMs = (Number(process.hrtime.bigint() - t0) / 1e6) * (N / (N - half));
    const cpuBaseline = cpuMs('self', true) - cpuChildren0;
    const loadBaseline = load();

    const rest = Array.from({ length: RSS_PODS - N - 1 }, (_, i) => N + 1 + i);
    t0 = process.hrtime.bigint();
    await pool(rest, CONCURRENCY, enroll);
    const restMs = Number(process.hrtime.bigint() - t0) / 1e6;
    await new Promise((r) => setTimeout(r, 2000));
    const full = await ask(child);

    const rate = (ms: number, n: number) => (n / (ms / 1000)).toFixed(1);
    const mb = (b: number) => (b / 1048576).toFixed(1);
    console.log(`\nambient enrollment, ${N} pods, ${CONCURRENCY} in flight; ${machine()}`);
    console.log(
      `agent (CNI event -> rules+routes -> ZDS ack -> probe set -> annotation): ${agentMs.toFixed(0)} ms = ${rate(agentMs, N)} pods/s (acked ${acked}/${N}, annotated ${annotated}/${N}; load after ${loadAgent})`,
    );
    console.log(
      `baseline, one nsenter+nft -f exec per pod (Istio's text), ${CONCURRENCY} in flight: ${parallelMs.toFixed(0)} ms = ${rate(parallelMs, N)} pods/s (from ${N - half} pods; load after ${loadBaseline})`,
    );
    console.log(
      `baseline, one nsenter+nft -f exec per pod, one at a time:          ${serialMs.toFixed(0)} ms = ${rate(serialMs, N)} pods/s (from ${half} pods)`,
    );
    console.log(
      `ratio agent / baseline (same concurrency): ${(parallelMs / agentMs).toFixed(2)}x (target >= 3x: ${parallelMs / agentMs >= 3 ? 'met' : 'NOT met'}); agent / serial baseline: ${(serialMs / agentMs).toFixed(2)}x`,
    );
    console.log(
      `CPU per pod (user+sys, both cores): agent ${(cpuAgent / N).toFixed(2)} ms, plus the bench's API and ztunnel stand-ins and client ${(cpuStandIns / N).toFixed(2)} ms; ` +
        `baseline nsenter+nft ${(cpuBaseline / (N - half)).toFixed(2)} ms`,
    );
    console.log(`next ${rest.length} pods: ${restMs.toFixed(0)} ms = ${rate(restMs, rest.length)} pods/s`);
    console.log(
      `agent RSS: idle ${mb(idle.rss)} MB; with ${full.enrolled} enrolled pods ${mb(full.rss)} MB (${mb(full.rssAfterGc)} MB after a GC; heap used ${mb(full.heapUsed)} MB)`,
    );
    console.log(
      `agent work: ${full.rulesApplied} in-pod applies, ${full.hostNftRuns} host nft runs, ${full.zdsRequests} ZDS requests, ${full.cached} netns held`,
    );
    if (full.errors.length > 0) console.log(`agent warnings/errors (first ${full.errors.length}):\n  ${full.errors.join('\n  ')}`);
  } finally {
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child!.once('exit', r));
      child.send({ type: 'stop' });
      await Promise.race([exited, new Promise((r) => setTimeout(r, 20_000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    standIn.close();
    await api.close();
    ipBatch(created.map((n) => `netns del ${n}`));
    fs.rmSync(runDir, { recursive: true, force: true });
  }
}

/** CPU time (user+sys) of a process so far, from /proc/<pid>/stat; with `children`, that of its waited-for children. */
function cpuMs(pid: number | 'self', children = false): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14-17 of proc(5) (utime stime cutime cstime), counted from field 3 here.
  const [u, s, cu, cs] = [f[11], f[12], f[13], f[14]].map(Number);
  return ((children ? cu + cs : u + s) * 1000) / CLOCK_TICKS;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
