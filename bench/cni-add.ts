// CNI ADD of a default sidecar pod into a fresh netns, end to end as a runtime sees it (exec,
// env + stdin, wait for exit), interleaved in one run (docs/payload.md, "Benchmarks"):
//   standalone      the payload's self-contained plugin (Node SEA + snapshot), no agent
//   shim -> agent   the payload's CNI binary (native/cni-shim.c) answered by a running agent,
//                   as deployed: its pod cache (a watch of the node's pods) answers the lookup
//   go loopback     Debian's compiled Go `loopback` plugin ADD (the Go floor)
//   nsenter nft -f  the same rules applied by `nsenter --net=PATH nft -f FILE` (the exec path
//                   Istio's plugin takes, minus its own start-up)
//   node -e 0       Node's own start-up on this machine
//   also, for reading the others: the standalone plugin's VERSION (its start-up alone) and
//   /bin/true (what this harness itself costs per run: Node's fork + exec + wait)
// The API stand-in and the agent run in processes of their own; every run gets a fresh netns
// (made and removed outside the timing) and is checked (exit 0, the pod's prevResult back).
// Then a burst of 50 concurrent ADDs, standalone and through the shim: wall time from the first
// spawn to the last exit, and the peak of the summed PSS (proportional set size, so shared
// pages count once) of the plugin processes, sampled every 10 ms, plus the agent's own PSS growth.
// Needs root, iproute2, nftables, util-linux (nsenter), containernetworking-plugins, openssl.
//
// usage: node dist/bench/cni-add.js [iterations, default 30] [burst size, default 50] [options]
//   --burst-only        single runs of the standalone and shim ADD only (for the ratios), then
//                       shim bursts only
//   --rounds=R          rounds of bursts (default 2; the table shows the best, the list all)
//   --startup           single runs of the standalone plugin (and its variants), its VERSION and
//                       node -e 0 only; no bursts
//   --standalone-env=K=V,...  (repeatable) a variant of the standalone case run with these extra
//                       environment variables, e.g. NODE_OPTIONS=--v8-pool-size=0
//   --cpu               also the CPU time of each single run (perf stat -e task-clock: user +
//                       system of the process and its threads), a steadier measure than wall time
//                       on a loaded machine
//   --launcher          also bursts started by bench/burst-launcher.c (posix_spawn, as a runtime
//                       written in Go execs: no copy of a 60 MB Node process per child),
//                       interleaved with the Node-spawned ones; wall time from its first spawn
//                       to its last exit, outputs checked the same way (no PSS sampling)
//   --agent-b=K=V,...   a second agent with these extra environment variables (e.g.
//                       ISTIO_CNI_TS_ADDON=/path/to/another/addon.node, or
//                       ICTS_BENCH_POD_CACHE=0: no pod cache, a GET per ADD), in a run dir of its
//                       own; its single runs and bursts interleave with the first agent's
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildCapture } from '../src/capture/build';
import { SIDECAR_TABLES } from '../src/capture/tables';
import { extractPodInfo } from '../src/redirect';
import { planSidecar } from '../src/plugin/istio';
import { replaceScript } from '../src/netns/nft';
import { sidecarPod } from '../test/support/cni-fakes';
import { PACKAGE_ROOT } from '../test/support/conformance';
import { PLUGIN_REL, SHIM_NAME, ensurePayload } from '../test/support/payload';

const positional = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const flag = (name: string): string | undefined => {
  const a = process.argv.slice(2).find((x) => x === `--${name}` || x.startsWith(`--${name}=`));
  return a === undefined ? undefined : a.includes('=') ? a.slice(a.indexOf('=') + 1) : '';
};
const N = Number(positional[0] ?? 30);
const BURST = Number(positional[1] ?? 50);
const BURST_ONLY = flag('burst-only') !== undefined;
const STARTUP = flag('startup') !== undefined;
const CPU = flag('cpu') !== undefined;
const LAUNCHER = flag('launcher') !== undefined;
const kvList = (v: string): Record<string, string> =>
  Object.fromEntries(v.split(',').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
const STANDALONE_VARIANTS = process.argv.slice(2).filter((a) => a.startsWith('--standalone-env=')).map((a) => kvList(a.slice('--standalone-env='.length)));
const ROUNDS = Number(flag('rounds') ?? 2);
const AGENT_B_ENV: Record<string, string> | undefined = flag('agent-b') === undefined ? undefined
  : Object.fromEntries(flag('agent-b')!.split(',').filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
const WARMUP = 3;
const LOOPBACK = '/usr/lib/cni/loopback';

function need(cond: boolean, msg: string): void {
  if (!cond) {
    process.stderr.write(`bench/cni-add: ${msg}\n`);
    process.exit(1);
  }
}

let seq = 0;
function freshNetns(): { name: string; path: string; remove: () => void } {
  const name = `icts-cnib-${process.pid}-${seq++}`;
  execFileSync('ip', ['netns', 'add', name]);
  execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return { name, path: `/run/netns/${name}`, remove: () => execFileSync('ip', ['netns', 'del', name]) };
}

interface Run {
  ms: number;
  /** task-clock ms of the process (--cpu). */
  cpuMs?: number;
  code: number | null;
  stdout: string;
  stderr: string;
}

let perfSeq = 0;
function run(cmd: string, args: string[], env: Record<string, string>, stdin: string, onSpawn?: (c: ChildProcess) => void, cpu = false): Promise<Run> {
  const perfOut = cpu ? path.join(os.tmpdir(), `icts-cnib-perf-${process.pid}-${perfSeq++}`) : '';
  if (cpu) [cmd, args] = ['perf', ['stat', '-x,', '-e', 'task-clock', '-o', perfOut, '--', cmd, ...args]];
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    onSpawn?.(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      let cpuMs: number | undefined;
      if (cpu) {
        const m = /^([\d.]+),msec,task-clock/m.exec(fs.readFileSync(perfOut, 'utf8'));
        fs.rmSync(perfOut, { force: true });
        cpuMs = m ? Number(m[1]) : undefined;
      }
      resolve({ ms, cpuMs, code, stdout, stderr });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(stdin);
  });
}

/** A helper process that prints one JSON line when ready. */
/** The pod's UID, as a runtime passes it in CNI_ARGS (K8S_POD_UID). */
const POD_UID = 'b7e1c2d4-0000-4000-8000-000000000001';

function helper(script: string, env: Record<string, string> = {}): Promise<{ child: ChildProcess; info: any }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve({ child, info: JSON.parse(out.slice(0, nl)) });
    });
    child.on('exit', (c) => reject(new Error(`helper exited ${c}`)));
  });
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const at = (s.length - 1) * q;
  const lo = Math.floor(at);
  return s[lo] + (s[Math.ceil(at)] - s[lo]) * (at - lo);
}

/** CPU ms of a process (all its threads): user + system, and of its waited-for children. */
function cpuMs(pid: number | 'self'): { own: number; children: number } {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const v = f.slice(f.lastIndexOf(')') + 2).split(' ').map(Number);
    const tick = 1000 / 100; // USER_HZ
    return { own: (v[11] + v[12]) * tick, children: (v[13] + v[14]) * tick };
  } catch {
    return { own: 0, children: 0 };
  }
}

/** CPU ms used by the whole machine (all cores, busy time) so far. */
function machineBusyMs(): number {
  const v = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) * 10;
}

/** PSS in kB of a live process, 0 when it is gone. */
function pssKb(pid: number): number {
  try {
    const t = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const m = /^Pss:\s+(\d+) kB/m.exec(t);
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

async function main(): Promise<void> {
  need(process.getuid?.() === 0, 'needs root (network namespaces)');
  for (const t of ['ip', 'nft', 'nsenter', 'openssl']) {
    need(spawnOk('sh', ['-c', `command -v ${t}`]), `needs ${t} on PATH`);
  }
  need(fs.existsSync(LOOPBACK), `${LOOPBACK} is missing: apt-get install containernetworking-plugins`);
  const payload = ensurePayload();
  const shim = path.join(payload, SHIM_NAME);
  const plugin = path.join(payload, PLUGIN_REL);

  // The API stand-in and the agent, each in a process of its own.
  const dist = path.join(PACKAGE_ROOT, 'dist');
  // Two stand-ins in that process: the pod GETs' (the plugin's kubeconfig points at it) and a
  // list+watch one holding the same pod on node-a, for the agent's pod cache.
  const api = await helper(`
    const { startPodApi } = require(${JSON.stringify(path.join(dist, 'test/support/payload.js'))});
    const { sidecarPod } = require(${JSON.stringify(path.join(dist, 'test/support/cni-fakes.js'))});
    const { KubeApiStandIn, NODE } = require(${JSON.stringify(path.join(dist, 'test/support/kube-api.js'))});
    const { makePki } = require(${JSON.stringify(path.join(dist, 'test/support/tls.js'))});
    const pod = sidecarPod({ name: 'web-1', namespace: 'shop' });
    const pki = makePki();
    Promise.all([startPodApi(), new KubeApiStandIn(pki).start()]).then(([a, w]) => {
      a.pods.set('shop/web-1', pod);
      w.upsert({ ...pod, metadata: { ...pod.metadata, uid: ${JSON.stringify(POD_UID)} }, spec: { ...pod.spec, nodeName: NODE } });
      console.log(JSON.stringify({ runDir: a.runDir, watchUrl: w.url, watchCa: pki.ca, node: NODE }));
    });`);
  const runDir: string = api.info.runDir;
  // The agent's fast path as deployed: with the pod cache (FAST_PATH_POD_CACHE, on by default),
  // unless ICTS_BENCH_POD_CACHE=0 (e.g. --agent-b=ICTS_BENCH_POD_CACHE=0: a GET per ADD).
  const startAgent = (dir: string, env: Record<string, string> = {}) => helper(`
    const { startCniServer } = require(${JSON.stringify(path.join(dist, 'src/agent/cni-server.js'))});
    const { NodePodCache } = require(${JSON.stringify(path.join(dist, 'src/agent/pod-cache.js'))});
    const { RestClient } = require(${JSON.stringify(path.join(dist, 'src/kube/rest.js'))});
    const { LogSink, ScopedLogger } = require(${JSON.stringify(path.join(dist, 'src/agent/log.js'))});
    const log = new ScopedLogger(new LogSink('warn', process.stderr), 'bench');
    const info = ${JSON.stringify(api.info)};
    const pods = process.env.ICTS_BENCH_POD_CACHE === '0' ? undefined
      : new NodePodCache(new RestClient({ server: info.watchUrl, ca: () => info.watchCa }), info.node, log).start();
    Promise.resolve(pods && pods.informer.synced)
      .then(() => startCniServer(${JSON.stringify(path.join(dir, 'cni-shim.sock'))}, { pluginLog: log, agentLog: log, pods }))
      .then(() => console.log(JSON.stringify({ pid: process.pid })));`, env);
  const agent = await startAgent(runDir);
  // The second agent (--agent-b) gets a run dir of its own with the same kubeconfig.
  let runDirB: string | undefined;
  let agentB: Awaited<ReturnType<typeof helper>> | undefined;
  if (AGENT_B_ENV) {
    runDirB = fs.mkdtempSync(path.join(os.tmpdir(), 'icts-cnib-agent-b-'));
    fs.chmodSync(runDirB, 0o750);
    fs.copyFileSync(path.join(runDir, 'istio-cni-kubeconfig'), path.join(runDirB, 'istio-cni-kubeconfig'));
    agentB = await startAgent(runDirB, AGENT_B_ENV);
  }
  const cleanup = () => {
    agent.child.kill('SIGKILL');
    agentB?.child.kill('SIGKILL');
    api.child.kill('SIGKILL');
    fs.rmSync(runDir, { recursive: true, force: true });
    if (runDirB) fs.rmSync(runDirB, { recursive: true, force: true });
  };
  process.on('exit', cleanup);

  const prevResult = { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: '/run/netns/pod' }], ips: [{ address: '10.0.0.2/24', interface: 0 }] };
  const confFor = (dir: string) => JSON.stringify({ cniVersion: '1.0.0', name: 'k8s-pod-network', type: 'istio-cni', cni_agent_run_dir: dir, plugin_log_level: 'info',
    exclude_namespaces: ['kube-system'], pod_namespace: 'istio-system', prevResult });
  const conf = confFor(runDir);
  const confB = runDirB ? confFor(runDirB) : conf;
  const want = `${JSON.stringify(prevResult)}\n`;
  const cniEnv = (ns: string, ifName = 'eth0') => ({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c0ffee', CNI_NETNS: ns, CNI_IFNAME: ifName, CNI_PATH: '/opt/cni/bin',
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_UID=${POD_UID}` });

  // The rules the plugin applies for this pod, as the script the addon hands to libnftables.
  const plan = planSidecar(extractPodInfo(sidecarPod({ name: 'web-1', namespace: 'shop' })), { netnsPath: '/run/netns/x', enableIPv6: false, env: {} });
  need(plan.capture, 'the default sidecar pod is captured');
  const script = replaceScript(buildCapture((plan as { config: Parameters<typeof buildCapture>[0] }).config), SIDECAR_TABLES.map((t) => ({ family: t.family, table: t.name })));
  const scriptFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'icts-cnib-')), 'rules.nft');
  fs.writeFileSync(scriptFile, script);

  const runC = (cmd: string, args: string[], env: Record<string, string>, stdin: string) => run(cmd, args, env, stdin, undefined, CPU);
  type Case = { name: string; go: (ns: string) => Promise<Run>; check: (r: Run, ns: { name: string }) => void };
  const applied = (r: Run, ns: { name: string }, label: string) => {
    if (r.code !== 0 || r.stdout !== want) throw new Error(`${label}: exit ${r.code}, stdout ${JSON.stringify(r.stdout)}, stderr ${r.stderr}`);
    const rules = execFileSync('ip', ['netns', 'exec', ns.name, 'nft', 'list', 'tables'], { encoding: 'utf8' });
    if (!rules.includes('istio-proxy-nat')) throw new Error(`${label}: no rules in the netns`);
  };
  const allCases: Case[] = [
    { name: 'standalone (SEA + snapshot)', go: (ns) => runC(plugin, [], cniEnv(ns), conf), check: (r, ns) => applied(r, ns, 'standalone') },
    { name: 'shim -> agent', go: (ns) => runC(shim, [], cniEnv(ns), conf), check: (r, ns) => applied(r, ns, 'shim') },
    ...STANDALONE_VARIANTS.map((v) => ({
      name: `standalone [${Object.entries(v).map(([k, x]) => `${k}=${x}`).join(' ')}]`,
      go: (ns: string) => runC(plugin, [], { ...cniEnv(ns), ...v }, conf),
      check: (r: Run, ns: { name: string }) => applied(r, ns, 'standalone variant'),
    })),
    ...(agentB ? [{ name: 'shim -> agent B', go: (ns: string) => runC(shim, [], cniEnv(ns), confB), check: (r: Run, ns: { name: string }) => applied(r, ns, 'shim B') }] : []),
    {
      name: 'go loopback ADD',
      go: (ns) => runC(LOOPBACK, [], { ...cniEnv(ns, 'lo'), CNI_PATH: '/usr/lib/cni' }, '{"cniVersion":"1.0.0","name":"lo","type":"loopback"}'),
      check: (r) => {
        if (r.code !== 0 || !r.stdout.includes('127.0.0.1/8')) throw new Error(`loopback: ${r.stdout}${r.stderr}`);
      },
    },
    {
      name: 'nsenter --net nft -f',
      go: (ns) => runC('nsenter', [`--net=${ns}`, 'nft', '-f', scriptFile], {}, ''),
      check: (r, ns) => {
        if (r.code !== 0) throw new Error(`nft: ${r.stderr}`);
        if (!execFileSync('ip', ['netns', 'exec', ns.name, 'nft', 'list', 'tables'], { encoding: 'utf8' }).includes('istio-proxy-nat')) throw new Error('nft: no rules');
      },
    },
    { name: 'node -e 0', go: () => runC(process.execPath, ['-e', '0'], {}, ''), check: (r) => { if (r.code !== 0) throw new Error('node -e 0 failed'); } },
    { name: '/bin/true (the harness: fork + exec + wait)', go: () => runC('/bin/true', [], {}, ''), check: (r) => { if (r.code !== 0) throw new Error('/bin/true failed'); } },
    {
      name: 'standalone VERSION (its start-up)',
      go: () => runC(plugin, [], { CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}'),
      check: (r) => {
        if (r.code !== 0 || !r.stdout.startsWith('{"cniVersion":"1.0.0"')) throw new Error(`VERSION: ${r.stdout}${r.stderr}`);
      },
    },
  ];
  const cases = BURST_ONLY
    ? allCases.filter((c) => c.name.startsWith('standalone (') || c.name.startsWith('shim '))
    : STARTUP
      ? allCases.filter((c) => c.name.startsWith('standalone') || c.name === 'node -e 0')
      : allCases;

  const times = new Map<string, number[]>(cases.map((c) => [c.name, []]));
  const cpuTimes = new Map<string, number[]>(cases.map((c) => [c.name, []]));
  process.stderr.write(`bench/cni-add: ${N} interleaved runs of each (+${WARMUP} warm-up), then bursts of ${BURST}\n`);
  for (let i = 0; i < WARMUP + N; i++) {
    // Rotate the order so that no case always runs first or right after another.
    const order = cases.map((_, k) => cases[(k + i) % cases.length]);
    for (const c of order) {
      const ns = freshNetns();
      try {
        const r = await c.go(ns.path);
        c.check(r, ns);
        if (i >= WARMUP) times.get(c.name)!.push(r.ms);
        if (i >= WARMUP && r.cpuMs !== undefined) cpuTimes.get(c.name)!.push(r.cpuMs);
      } finally {
        ns.remove();
      }
    }
  }

  // Bursts.
  const loopbackConf = '{"cniVersion":"1.0.0","name":"lo","type":"loopback"}';
  async function burst(label: string, file: string, burstConf = conf, agentPid: number = agent.info.pid): Promise<{ wallMs: number; peakMb: number; agentMb: number; failures: number; cpu: { agent: number; shims: number; bench: number; machine: number } }> {
    const isLoopback = file === LOOPBACK;
    const nss = Array.from({ length: BURST }, () => freshNetns());
    const pids = new Set<number>();
    let peak = 0;
    let agentPeak = 0;
    const agentBase = pssKb(agentPid);
    const sampler = setInterval(() => {
      let sum = 0;
      for (const pid of pids) sum += pssKb(pid);
      peak = Math.max(peak, sum);
      agentPeak = Math.max(agentPeak, pssKb(agentPid) - agentBase);
    }, 10);
    try {
      const cpu0 = { agent: cpuMs(agentPid).own, shims: cpuMs('self').children, bench: cpuMs('self').own, machine: machineBusyMs() };
      const t0 = process.hrtime.bigint();
      const rs = await Promise.all(nss.map((ns) => run(file, [], isLoopback ? { ...cniEnv(ns.path, 'lo'), CNI_PATH: '/usr/lib/cni' } : cniEnv(ns.path), isLoopback ? loopbackConf : burstConf, (c) => {
        if (c.pid) pids.add(c.pid);
        c.on('exit', () => pids.delete(c.pid!));
      })));
      const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
      const cpu = { agent: cpuMs(agentPid).own - cpu0.agent, shims: cpuMs('self').children - cpu0.shims, bench: cpuMs('self').own - cpu0.bench, machine: machineBusyMs() - cpu0.machine };
      const failures = rs.filter((r) => r.code !== 0 || (isLoopback ? !r.stdout.includes('127.0.0.1/8') : r.stdout !== want)).length;
      if (failures) process.stderr.write(`${label}: ${failures} of ${BURST} failed, e.g. ${rs.find((r) => r.code !== 0)?.stdout}\n`);
      return { wallMs, peakMb: peak / 1024, agentMb: Math.max(0, agentPeak) / 1024, failures, cpu };
    } finally {
      clearInterval(sampler);
      for (const ns of nss) ns.remove();
    }
  }
  type Burst = Awaited<ReturnType<typeof burst>>;

  // The same burst started by bench/burst-launcher.c (--launcher).
  let launcherBin = '';
  if (LAUNCHER) {
    launcherBin = path.join(path.dirname(scriptFile), 'burst-launcher');
    execFileSync('gcc', ['-O2', '-o', launcherBin, path.join(PACKAGE_ROOT, 'bench', 'burst-launcher.c')]);
  }
  async function burstLaunched(label: string, file: string, burstConf = conf, agentPid: number = agent.info.pid): Promise<Burst> {
    const isLoopback = file === LOOPBACK;
    const nss = Array.from({ length: BURST }, () => freshNetns());
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'icts-cnib-launch-'));
    try {
      const stdinFile = path.join(dir, 'stdin');
      fs.writeFileSync(stdinFile, isLoopback ? loopbackConf : burstConf);
      const env = isLoopback ? { ...cniEnv('', 'lo'), CNI_PATH: '/usr/lib/cni' } : cniEnv('');
      const cpu0 = { agent: cpuMs(agentPid).own, shims: cpuMs('self').children, bench: cpuMs('self').own, machine: machineBusyMs() };
      const r = await run(launcherBin, [stdinFile, dir, file, ...nss.map((ns) => ns.path)], env, '');
      const cpu = { agent: cpuMs(agentPid).own - cpu0.agent, shims: cpuMs('self').children - cpu0.shims, bench: cpuMs('self').own - cpu0.bench, machine: machineBusyMs() - cpu0.machine };
      const m = /^wall_ms ([\d.]+)$/m.exec(r.stdout);
      if (r.code !== 0 || !m) throw new Error(`burst-launcher: exit ${r.code}: ${r.stderr}`);
      let failures = 0;
      for (let i = 0; i < BURST; i++) {
        const code = Number(fs.readFileSync(path.join(dir, `${i}.rc`), 'utf8'));
        const out = fs.readFileSync(path.join(dir, `${i}.out`), 'utf8');
        if (code !== 0 || (isLoopback ? !out.includes('127.0.0.1/8') : out !== want)) failures++;
      }
      if (failures) process.stderr.write(`${label}: ${failures} of ${BURST} failed\n`);
      return { wallMs: Number(m[1]), peakMb: NaN, agentMb: NaN, failures, cpu };
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
      for (const ns of nss) ns.remove();
    }
  }

  const rounds: Record<'standalone' | 'shim' | 'shimB' | 'loop' | 'shimL' | 'shimBL' | 'loopL', Burst[]> = { standalone: [], shim: [], shimB: [], loop: [], shimL: [], shimBL: [], loopL: [] };
  // One standalone ADD measured within each round (three, the median), so that every burst has a
  // reference taken under the same load as itself.
  const roundRef: number[] = [];
  const standaloneCase = allCases[0];
  for (let r = 0; r < (STARTUP ? 0 : ROUNDS); r++) {
    const refs: number[] = [];
    for (let k = 0; k < 3; k++) {
      const ns = freshNetns();
      try {
        const one = await run(plugin, [], cniEnv(ns.path), conf);
        standaloneCase.check(one, ns);
        refs.push(one.ms);
      } finally {
        ns.remove();
      }
    }
    roundRef.push(quantile(refs, 0.5));
    if (!BURST_ONLY) rounds.standalone.push(await burst('standalone', plugin));
    rounds.shim.push(await burst('shim', shim));
    if (LAUNCHER) rounds.shimL.push(await burstLaunched('shim (posix_spawn)', shim));
    if (agentB) rounds.shimB.push(await burst('shim B', shim, confB, agentB.info.pid));
    if (agentB && LAUNCHER) rounds.shimBL.push(await burstLaunched('shim B (posix_spawn)', shim, confB, agentB.info.pid));
    if (!BURST_ONLY) rounds.loop.push(await burst('go loopback', LOOPBACK));
    if (LAUNCHER && !BURST_ONLY) rounds.loopL.push(await burstLaunched('go loopback (posix_spawn)', LOOPBACK));
  }

  const med = (name: string) => (times.has(name) ? quantile(times.get(name)!, 0.5) : NaN);
  const lo = med('go loopback ADD');
  const node0 = med('node -e 0');
  const cpuMed = (name: string) => quantile(cpuTimes.get(name)!, 0.5);
  const rows = cases.map((c) => {
    const xs = times.get(c.name)!;
    const cpuCols = CPU ? ` ${cpuMed(c.name).toFixed(1)} ms | ${(cpuMed(c.name) / cpuMed('node -e 0')).toFixed(2)} |` : '';
    return `| ${c.name} | ${med(c.name).toFixed(1)} ms | ${quantile(xs, 0.9).toFixed(1)} ms | ${(med(c.name) / lo).toFixed(2)} | ${(med(c.name) / node0).toFixed(2)} |${cpuCols}`;
  });
  const out = [
    `CNI ADD of a default sidecar pod into a fresh netns; ${N} interleaved runs each; ${os.cpus().length} CPUs, load ${os.loadavg()[0].toFixed(2)} at the end`,
    '',
    `| case | median | p90 | / go loopback | / node -e 0 |${CPU ? ' CPU (task-clock) | CPU / node -e 0 |' : ''}`,
    `|---|---|---|---|---|${CPU ? '---|---|' : ''}`,
    ...rows,
    '',
    ...(BURST_ONLY || STARTUP ? [] : [`Targets: shim -> agent <= 1.0x go loopback: ${(med('shim -> agent') / lo).toFixed(2)}x (${med('shim -> agent') <= lo ? 'met' : 'NOT met'}); ` +
      `standalone <= 1.25x node -e 0: ${(med('standalone (SEA + snapshot)') / node0).toFixed(2)}x (${med('standalone (SEA + snapshot)') <= 1.25 * node0 ? 'met' : 'NOT met'})`,
    '']),
  ];
  if (STARTUP) {
    process.stdout.write(`${out.join('\n')}\n`);
    fs.rmSync(path.dirname(scriptFile), { recursive: true, force: true });
    cleanup();
    process.exit(0);
  }
  out.push(
    `Burst of ${BURST} concurrent ADDs (${ROUNDS} rounds each, the best shown; each ADD checked):`,
    '',
    '| path | wall time | / one ADD of that path | / one standalone ADD | peak PSS of plugin processes | agent PSS growth | failures |',
    '|---|---|---|---|---|---|---|',
  );
  const best = (bs: Burst[]) => bs.reduce((a, b) => (a.wallMs <= b.wallMs ? a : b));
  for (const [label, bs, one] of [
    ['standalone', rounds.standalone, med('standalone (SEA + snapshot)')],
    ['shim -> agent', rounds.shim, med('shim -> agent')],
    ['shim -> agent B', rounds.shimB, med('shim -> agent B')],
    ['go loopback (reference)', rounds.loop, med('go loopback ADD')],
    ['shim -> agent, started by posix_spawn', rounds.shimL, med('shim -> agent')],
    ['shim -> agent B, started by posix_spawn', rounds.shimBL, med('shim -> agent B')],
    ['go loopback, started by posix_spawn', rounds.loopL, med('go loopback ADD')],
  ] as const) {
    if (bs.length === 0) continue;
    const b = best(bs);
    out.push(`| ${label} | ${b.wallMs.toFixed(0)} ms | ${(b.wallMs / one).toFixed(1)} | ${(b.wallMs / med('standalone (SEA + snapshot)')).toFixed(2)} | ${Number.isNaN(b.peakMb) ? '-' : `${b.peakMb.toFixed(1)} MB`} | ${label === 'shim -> agent' ? `${b.agentMb.toFixed(1)} MB` : '-'} | ${b.failures} |`);
  }
  const walls = (bs: Burst[]) => {
    const m = quantile(bs.map((b) => b.wallMs), 0.5);
    const perRound = bs.map((b, i) => b.wallMs / roundRef[i]);
    return `${bs.map((b) => b.wallMs.toFixed(0)).join(', ')} (median ${m.toFixed(0)} = ${(m / med('standalone (SEA + snapshot)')).toFixed(2)}x one standalone ADD; ` +
      `against the standalone ADD of the same round: ${perRound.map((x) => x.toFixed(2)).join(', ')}, median ${quantile(perRound, 0.5).toFixed(2)}x)`;
  };
  const cpuLine = (label: string, bs: Burst[]) => {
    const m = (k: keyof Burst['cpu']) => quantile(bs.map((b) => b.cpu[k]), 0.5).toFixed(0);
    return `${label}: CPU ms per burst (medians; 10 ms ticks): agent ${m('agent')}, shims ${m('shims')}, this harness ${m('bench')}, whole machine ${m('machine')}`;
  };
  out.push('', `Standalone ADD within each round (median of 3), ms: ${roundRef.map((x) => x.toFixed(0)).join(', ')}`);
  out.push('', `Every round, wall ms: shim -> agent ${walls(rounds.shim)}` + (agentB ? `; shim -> agent B ${walls(rounds.shimB)}; B: ${JSON.stringify(AGENT_B_ENV)}` : '') +
    (LAUNCHER ? `; shim -> agent started by posix_spawn ${walls(rounds.shimL)}` : '') +
    (LAUNCHER && agentB ? `; shim -> agent B started by posix_spawn ${walls(rounds.shimBL)}` : ''));
  out.push('', cpuLine('shim -> agent', rounds.shim), ...(agentB ? ['', cpuLine('shim -> agent B', rounds.shimB)] : []),
    ...(LAUNCHER ? ['', cpuLine('shim -> agent, posix_spawn (shims = the launcher and its children)', rounds.shimL)] : []),
    ...(LAUNCHER && agentB ? ['', cpuLine('shim -> agent B, posix_spawn', rounds.shimBL)] : []));
  const s = best(rounds.shim);
  out.push('', `Shim burst targets: wall < 2x one ADD: ${(s.wallMs / med('shim -> agent')).toFixed(1)}x one shim ADD, ${(s.wallMs / med('standalone (SEA + snapshot)')).toFixed(2)}x one standalone ADD; ` +
    `peak added memory (shims + agent growth) ${(s.peakMb + s.agentMb).toFixed(1)} MB (target < 50 MB: ${s.peakMb + s.agentMb < 50 ? 'met' : 'NOT met'})`);
  process.stdout.write(`${out.join('\n')}\n`);
  fs.rmSync(path.dirname(scriptFile), { recursive: true, force: true });
  cleanup();
  process.exit(0);
}

function spawnOk(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

main().catch((e) => {
  process.stderr.write(`bench/cni-add: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
