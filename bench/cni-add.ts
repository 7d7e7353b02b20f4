// CNI ADD of a default sidecar pod into a fresh netns, end to end as a runtime sees it (exec,
// env + stdin, wait for exit), interleaved in one run (docs/payload.md, "Benchmarks"):
//   standalone      the payload's self-contained plugin (Node SEA + snapshot), no agent
//   shim -> agent   the payload's CNI binary (native/cni-shim.c) answered by a running agent
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
// usage: node dist/bench/cni-add.js [iterations, default 30] [burst size, default 50]
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

const N = Number(process.argv[2] ?? 30);
const BURST = Number(process.argv[3] ?? 50);
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
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], env: Record<string, string>, stdin: string, onSpawn?: (c: ChildProcess) => void): Promise<Run> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    onSpawn?.(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ ms: Number(process.hrtime.bigint() - t0) / 1e6, code, stdout, stderr }));
    child.stdin.on('error', () => undefined);
    child.stdin.end(stdin);
  });
}

/** A helper process that prints one JSON line when ready. */
function helper(script: string): Promise<{ child: ChildProcess; info: any }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
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
  const api = await helper(`
    const { startPodApi } = require(${JSON.stringify(path.join(dist, 'test/support/payload.js'))});
    const { sidecarPod } = require(${JSON.stringify(path.join(dist, 'test/support/cni-fakes.js'))});
    startPodApi().then((a) => { a.pods.set('shop/web-1', sidecarPod({ name: 'web-1', namespace: 'shop' })); console.log(JSON.stringify({ runDir: a.runDir })); });`);
  const runDir: string = api.info.runDir;
  const agent = await helper(`
    const { startCniServer } = require(${JSON.stringify(path.join(dist, 'src/agent/cni-server.js'))});
    const { LogSink, ScopedLogger } = require(${JSON.stringify(path.join(dist, 'src/agent/log.js'))});
    const log = new ScopedLogger(new LogSink('warn', process.stderr), 'bench');
    startCniServer(${JSON.stringify(path.join(runDir, 'cni-shim.sock'))}, { pluginLog: log, agentLog: log })
      .then(() => console.log(JSON.stringify({ pid: process.pid })));`);
  const cleanup = () => {
    agent.child.kill('SIGKILL');
    api.child.kill('SIGKILL');
    fs.rmSync(runDir, { recursive: true, force: true });
  };
  process.on('exit', cleanup);

  const prevResult = { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: '/run/netns/pod' }], ips: [{ address: '10.0.0.2/24', interface: 0 }] };
  const conf = JSON.stringify({ cniVersion: '1.0.0', name: 'k8s-pod-network', type: 'istio-cni', cni_agent_run_dir: runDir, plugin_log_level: 'info',
    exclude_namespaces: ['kube-system'], pod_namespace: 'istio-system', prevResult });
  const want = `${JSON.stringify(prevResult)}\n`;
  const cniEnv = (ns: string, ifName = 'eth0') => ({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c0ffee', CNI_NETNS: ns, CNI_IFNAME: ifName, CNI_PATH: '/opt/cni/bin',
    CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1' });

  // The rules the plugin applies for this pod, as the script the addon hands to libnftables.
  const plan = planSidecar(extractPodInfo(sidecarPod({ name: 'web-1', namespace: 'shop' })), { netnsPath: '/run/netns/x', enableIPv6: false, env: {} });
  need(plan.capture, 'the default sidecar pod is captured');
  const script = replaceScript(buildCapture((plan as { config: Parameters<typeof buildCapture>[0] }).config), SIDECAR_TABLES.map((t) => ({ family: t.family, table: t.name })));
  const scriptFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'icts-cnib-')), 'rules.nft');
  fs.writeFileSync(scriptFile, script);

  type Case = { name: string; go: (ns: string) => Promise<Run>; check: (r: Run, ns: { name: string }) => void };
  const applied = (r: Run, ns: { name: string }, label: string) => {
    if (r.code !== 0 || r.stdout !== want) throw new Error(`${label}: exit ${r.code}, stdout ${JSON.stringify(r.stdout)}, stderr ${r.stderr}`);
    const rules = execFileSync('ip', ['netns', 'exec', ns.name, 'nft', 'list', 'tables'], { encoding: 'utf8' });
    if (!rules.includes('istio-proxy-nat')) throw new Error(`${label}: no rules in the netns`);
  };
  const cases: Case[] = [
    { name: 'standalone (SEA + snapshot)', go: (ns) => run(plugin, [], cniEnv(ns), conf), check: (r, ns) => applied(r, ns, 'standalone') },
    { name: 'shim -> agent', go: (ns) => run(shim, [], cniEnv(ns), conf), check: (r, ns) => applied(r, ns, 'shim') },
    {
      name: 'go loopback ADD',
      go: (ns) => run(LOOPBACK, [], { ...cniEnv(ns, 'lo'), CNI_PATH: '/usr/lib/cni' }, '{"cniVersion":"1.0.0","name":"lo","type":"loopback"}'),
      check: (r) => {
        if (r.code !== 0 || !r.stdout.includes('127.0.0.1/8')) throw new Error(`loopback: ${r.stdout}${r.stderr}`);
      },
    },
    {
      name: 'nsenter --net nft -f',
      go: (ns) => run('nsenter', [`--net=${ns}`, 'nft', '-f', scriptFile], {}, ''),
      check: (r, ns) => {
        if (r.code !== 0) throw new Error(`nft: ${r.stderr}`);
        if (!execFileSync('ip', ['netns', 'exec', ns.name, 'nft', 'list', 'tables'], { encoding: 'utf8' }).includes('istio-proxy-nat')) throw new Error('nft: no rules');
      },
    },
    { name: 'node -e 0', go: () => run(process.execPath, ['-e', '0'], {}, ''), check: (r) => { if (r.code !== 0) throw new Error('node -e 0 failed'); } },
    { name: '/bin/true (the harness: fork + exec + wait)', go: () => run('/bin/true', [], {}, ''), check: (r) => { if (r.code !== 0) throw new Error('/bin/true failed'); } },
    {
      name: 'standalone VERSION (its start-up)',
      go: () => run(plugin, [], { CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}'),
      check: (r) => {
        if (r.code !== 0 || !r.stdout.startsWith('{"cniVersion":"1.0.0"')) throw new Error(`VERSION: ${r.stdout}${r.stderr}`);
      },
    },
  ];

  const times = new Map<string, number[]>(cases.map((c) => [c.name, []]));
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
      } finally {
        ns.remove();
      }
    }
  }

  // Bursts.
  const loopbackConf = '{"cniVersion":"1.0.0","name":"lo","type":"loopback"}';
  async function burst(label: string, file: string): Promise<{ wallMs: number; peakMb: number; agentMb: number; failures: number }> {
    const isLoopback = file === LOOPBACK;
    const nss = Array.from({ length: BURST }, () => freshNetns());
    const pids = new Set<number>();
    let peak = 0;
    let agentPeak = 0;
    const agentPid: number = agent.info.pid;
    const agentBase = pssKb(agentPid);
    const sampler = setInterval(() => {
      let sum = 0;
      for (const pid of pids) sum += pssKb(pid);
      peak = Math.max(peak, sum);
      agentPeak = Math.max(agentPeak, pssKb(agentPid) - agentBase);
    }, 10);
    try {
      const t0 = process.hrtime.bigint();
      const rs = await Promise.all(nss.map((ns) => run(file, [], isLoopback ? { ...cniEnv(ns.path, 'lo'), CNI_PATH: '/usr/lib/cni' } : cniEnv(ns.path), isLoopback ? loopbackConf : conf, (c) => {
        if (c.pid) pids.add(c.pid);
        c.on('exit', () => pids.delete(c.pid!));
      })));
      const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
      const failures = rs.filter((r) => r.code !== 0 || (isLoopback ? !r.stdout.includes('127.0.0.1/8') : r.stdout !== want)).length;
      if (failures) process.stderr.write(`${label}: ${failures} of ${BURST} failed, e.g. ${rs.find((r) => r.code !== 0)?.stdout}\n`);
      return { wallMs, peakMb: peak / 1024, agentMb: Math.max(0, agentPeak) / 1024, failures };
    } finally {
      clearInterval(sampler);
      for (const ns of nss) ns.remove();
    }
  }
  const bStandalone = await burst('standalone', plugin);
  const bShim = await burst('shim', shim);
  const bLoop = await burst('go loopback', LOOPBACK);
  const bStandalone2 = await burst('standalone', plugin);
  const bShim2 = await burst('shim', shim);
  const bLoop2 = await burst('go loopback', LOOPBACK);

  const med = (name: string) => quantile(times.get(name)!, 0.5);
  const lo = med('go loopback ADD');
  const node0 = med('node -e 0');
  const rows = cases.map((c) => {
    const xs = times.get(c.name)!;
    return `| ${c.name} | ${med(c.name).toFixed(1)} ms | ${quantile(xs, 0.9).toFixed(1)} ms | ${(med(c.name) / lo).toFixed(2)} | ${(med(c.name) / node0).toFixed(2)} |`;
  });
  const out = [
    `CNI ADD of a default sidecar pod into a fresh netns; ${N} interleaved runs each; ${os.cpus().length} CPUs, load ${os.loadavg()[0].toFixed(2)} at the end`,
    '',
    '| case | median | p90 | / go loopback | / node -e 0 |',
    '|---|---|---|---|---|',
    ...rows,
    '',
    `Targets: shim -> agent <= 1.0x go loopback: ${(med('shim -> agent') / lo).toFixed(2)}x (${med('shim -> agent') <= lo ? 'met' : 'NOT met'}); ` +
      `standalone <= 1.25x node -e 0: ${(med('standalone (SEA + snapshot)') / node0).toFixed(2)}x (${med('standalone (SEA + snapshot)') <= 1.25 * node0 ? 'met' : 'NOT met'})`,
    '',
    `Burst of ${BURST} concurrent ADDs (two rounds each, the better shown; each ADD checked):`,
    '',
    '| path | wall time | / one ADD of that path | / one standalone ADD | peak PSS of plugin processes | agent PSS growth | failures |',
    '|---|---|---|---|---|---|---|',
  ];
  const best = (a: typeof bShim, b: typeof bShim) => (a.wallMs <= b.wallMs ? a : b);
  for (const [label, b, one] of [
    ['standalone', best(bStandalone, bStandalone2), med('standalone (SEA + snapshot)')],
    ['shim -> agent', best(bShim, bShim2), med('shim -> agent')],
    ['go loopback (reference)', best(bLoop, bLoop2), med('go loopback ADD')],
  ] as const) {
    out.push(`| ${label} | ${b.wallMs.toFixed(0)} ms | ${(b.wallMs / one).toFixed(1)} | ${(b.wallMs / med('standalone (SEA + snapshot)')).toFixed(2)} | ${b.peakMb.toFixed(1)} MB | ${label === 'shim -> agent' ? `${b.agentMb.toFixed(1)} MB` : '-'} | ${b.failures} |`);
  }
  const s = best(bShim, bShim2);
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
