// Soak (issue 8, item 5): pod churn through a private containerd with the node agent running,
// for `--minutes` (default 30). Not part of `npm test`: `npm run bench:soak -- --minutes 30`.
//
// The node is the e2e harness's (test/root/e2e/harness.ts: private containerd in its own mount
// namespace, bridge → portmap as the primary network, the HTTPS API stand-in). The real
// `istio-cni-ts agent` process installs the self-contained payload (the C shim as `istio-cni`)
// and chains our entry, as in test/root/e2e/containerd-agent.test.ts, so every ADD and DEL goes
// shim → agent (cni-shim.sock, the pod netns passed as a descriptor). Then, with `--inflight`
// pods in flight (default 3), each worker loops: RunPodSandbox of a sidecar-injected pod →
// the pod netns holds exactly the reference ruleset (`rules --dry-run --pod`, applied by nft in a
// throwaway netns) and the API saw one GET for it (`--pod-cache true`: the agent gets NODE_NAME,
// the pods are bound to that node, and the agent's watch of them may answer with no GET)
// → StopPodSandbox → RemovePodSandbox → the
// netns and the IP are gone. Every `--sample-seconds` (default 5) the agent's VmRSS
// (/proc/<pid>/status) and fd count (/proc/<pid>/fd) are sampled.
//
// At the end: pods churned, failures (must be 0: the exit code is 1 otherwise), RSS and fd count
// at start and end, and their least-squares slope per 10 minutes over the samples after the
// warm-up (`--warmup-minutes`, default 5, less for short runs). The samples go to `--out`
// (default /tmp/icts-soak-<pid>.json). The agent runs from a private copy of the built package
// (another developer's rebuild of the shared dist/ must not change it mid-run). Everything lives
// under /tmp/icts-e2e-<pid> and is removed at the end, also on Ctrl-C/SIGTERM (the harness's
// emergency clean-up: agent, containerd, shims, sandboxes, bridge, state dir).
import { ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { PACKAGE_ROOT, PAYLOAD_DIR } from './support/paths';
import {
  E2eWorld,
  PLUGIN_TYPE,
  PodSpecLite,
  RunningPod,
  agentArgs,
  agentEnv,
  freePort,
  httpGet,
  injectedPod,
  onLines,
  openWorld,
  referenceRuleset,
} from './support/testbed';

const execFileP = promisify(execFile);

// ---------------------------------------------------------------------------------------------
// Options.

function usage(msg: string): never {
  process.stderr.write(
    `soak: ${msg}\nusage: node dist/bench/soak.js [--minutes N (30)] [--inflight N (3)] [--sample-seconds N (5)] [--warmup-minutes N] [--out FILE] [--pod-cache true|false (false)]\n`,
  );
  process.exit(2);
}

function parseArgs(argv: string[]): { minutes: number; inflight: number; sampleS: number; warmupMin: number; out: string; podCache: boolean } {
  const o: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(argv[i]);
    if (!m) usage(`unexpected argument ${JSON.stringify(argv[i])}`);
    const v = m[2] ?? argv[++i];
    if (v === undefined) usage(`--${m[1]} needs a value`);
    o[m[1]] = v;
  }
  const num = (k: string, def: number, min: number) => {
    if (o[k] === undefined) return def;
    const n = Number(o[k]);
    if (!Number.isFinite(n) || n < min) usage(`--${k} ${JSON.stringify(o[k])}: expected a number >= ${min}`);
    return n;
  };
  for (const k of Object.keys(o))
    if (!['minutes', 'inflight', 'sample-seconds', 'warmup-minutes', 'out', 'pod-cache'].includes(k)) usage(`unknown option --${k}`);
  if (o['pod-cache'] !== undefined && !['true', 'false'].includes(o['pod-cache']))
    usage(`--pod-cache ${JSON.stringify(o['pod-cache'])}: expected true or false`);
  const minutes = num('minutes', 30, 0.1);
  return {
    minutes,
    inflight: Math.floor(num('inflight', 3, 1)),
    sampleS: num('sample-seconds', 5, 0.5),
    warmupMin: num('warmup-minutes', Math.round(Math.min(5, minutes / 6) * 100) / 100, 0),
    out: o.out ?? `/tmp/icts-soak-${process.pid}.json`,
    podCache: o['pod-cache'] === 'true',
  };
}

const opts = parseArgs(process.argv.slice(2));
/** The node the pods are bound to with --pod-cache (the agent's NODE_NAME). */
const SOAK_NODE = 'soak-node';
const log = (m: string) => process.stdout.write(`${new Date().toISOString()} soak: ${m}\n`);

// ---------------------------------------------------------------------------------------------
// Helpers.

async function nft(nsPath: string): Promise<string> {
  return (await execFileP('nsenter', [`--net=${nsPath}`, 'nft', 'list', 'ruleset'], { timeout: 30_000 })).stdout;
}

/** A GET that gives up after 5 s; status 0 (empty body) when it failed. */
const fetchText = (url: string) => httpGet(url, { timeoutMs: 5000 }).catch(() => ({ status: 0, body: '' }));

async function get(url: string): Promise<number> {
  return (await fetchText(url)).status;
}

/** The agent's V8 heap from its own metrics (prom-client's default Node.js metrics), in kB. */
async function heapStats(metrics: string): Promise<{ heapUsedKb: number; heapTotalKb: number; externalKb: number }> {
  const { body } = await fetchText(`http://${metrics}/metrics`);
  const v = (name: string) => Math.round(Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(body)?.[1] ?? NaN) / 1024);
  return { heapUsedKb: v('nodejs_heap_size_used_bytes'), heapTotalKb: v('nodejs_heap_size_total_bytes'), externalKb: v('nodejs_external_memory_bytes') };
}

/** Least-squares slope of y over x. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  if (n < 2) return NaN;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) ** 2;
  }
  return sxx === 0 ? NaN : sxy / sxx;
}

/** A private copy of the built package for the agent (bin, dist/src, the addon; node_modules linked). */
function snapshotPackage(dir: string): string {
  for (const f of ['package.json', 'bin', 'dist/src']) {
    fs.cpSync(path.join(PACKAGE_ROOT, f), path.join(dir, f), { recursive: true, filter: (src) => !src.endsWith('.map') });
  }
  const addon = path.join('build', 'Release', 'nftables_napi.node');
  fs.mkdirSync(path.join(dir, 'build', 'Release'), { recursive: true });
  fs.copyFileSync(path.join(PACKAGE_ROOT, addon), path.join(dir, addon));
  fs.symlinkSync(path.join(PACKAGE_ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  return path.join(dir, 'bin', 'istio-cni-ts.js');
}

// ---------------------------------------------------------------------------------------------
// The agent process.

interface Agent {
  proc: ChildProcess;
  pid: number;
  /** The last lines of its output (a ring), and how many lines it wrote. */
  tail: string[];
  lines: number;
  warnOrError: number;
  /** ADDs the agent served itself (its own `ADD: sidecar capture applied` lines). */
  adds: number;
  exit?: { code: number | null; signal: NodeJS.Signals | null };
  exited: Promise<void>;
  health: string;
  metrics: string;
}

async function startAgent(world: E2eWorld, bin: string, payload: string, logFile: string): Promise<Agent> {
  const metricsPort = await freePort();
  const proc = spawn(process.execPath, [bin, 'agent', ...agentArgs(world.agentDirs(payload))], {
    env: agentEnv(world.api.port, {
      LISTEN_ADDRESS: '127.0.0.1',
      HEALTH_PORT: '0',
      MONITORING_PORT: String(metricsPort),
      PLUGIN_LOG_LEVEL: 'info',
      AGENT_LOG_LEVEL: 'info',
      // --pod-cache: NODE_NAME, as the DaemonSet sets it, turns on the fast path's pod cache.
      ...(opts.podCache ? { NODE_NAME: SOAK_NODE } : {}),
    }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  world.daemons.push(proc);
  const logFd = fs.openSync(logFile, 'a');
  const ag: Agent = {
    proc,
    pid: proc.pid ?? 0,
    tail: [],
    lines: 0,
    warnOrError: 0,
    adds: 0,
    exited: Promise.resolve(),
    health: '',
    metrics: `127.0.0.1:${metricsPort}`,
  };
  ag.exited = new Promise((r) => {
    proc.on('exit', (code, signal) => {
      ag.exit = { code, signal };
      r();
    });
  });
  const count = (prefix: string) => (l: string) => {
    ag.lines++;
    if (/\t(warn|error)\t|"level":"(warn|error)"/.test(l)) ag.warnOrError++;
    if (l.includes('\tcni-plugin\tADD: sidecar capture applied\t')) ag.adds++;
    ag.tail.push(prefix + l);
    if (ag.tail.length > 200) ag.tail.shift();
  };
  for (const [stream, prefix] of [
    [proc.stdout!, ''],
    [proc.stderr!, 'STDERR '],
  ] as const) {
    stream.on('data', (c: Buffer) => fs.writeSync(logFd, c));
    onLines(stream, count(prefix));
  }
  proc.on('close', () => fs.closeSync(logFd));
  const deadline = Date.now() + 30_000;
  for (;;) {
    const line = ag.tail.find((l) => l.includes('health server listening'));
    if (line) {
      ag.health = /address=(\S+)/.exec(line)![1];
      break;
    }
    if (ag.exit || Date.now() > deadline) throw new Error(`the agent did not start (${JSON.stringify(ag.exit)}):\n${ag.tail.join('\n')}`);
    await sleep(50);
  }
  const d2 = Date.now() + 30_000;
  while ((await get(`http://${ag.health}/readyz`)) !== 200) {
    if (ag.exit || Date.now() > d2) throw new Error(`the agent did not become ready:\n${ag.tail.join('\n')}`);
    await sleep(100);
  }
  return ag;
}

function procStats(pid: number): { rssKb: number; fds: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN);
  return { rssKb, fds: fs.readdirSync(`/proc/${pid}/fd`).length };
}

// ---------------------------------------------------------------------------------------------
// The run.

interface Sample {
  /** Seconds since the churn started. */
  t: number;
  rssKb: number;
  fds: number;
  /** The agent's V8 heap (used, total) and external memory, from its metrics endpoint. */
  heapUsedKb: number;
  heapTotalKb: number;
  externalKb: number;
  podsChurned: number;
  failures: number;
}

async function main(): Promise<number> {
  const world = openWorld(log);
  log(`options ${JSON.stringify(opts)}; state dir ${world.dir}`);

  const payloadSrc = PAYLOAD_DIR;
  if (!fs.existsSync(path.join(payloadSrc, 'istio-cni'))) throw new Error(`${payloadSrc} holds no payload: run \`npm run package\` (npm run bench:soak does)`);
  await world.setup({ installPlugin: false });
  // Private copies: the payload and the package may be rebuilt by others while this runs.
  const payload = path.join(world.dir, 'payload');
  fs.cpSync(payloadSrc, payload, { recursive: true });
  const agentBin = snapshotPackage(path.join(world.dir, 'pkg'));
  const agentLog = `/tmp/icts-soak-${process.pid}.agent.log`;
  const agent = await startAgent(world, agentBin, payload, agentLog);
  log(`agent ${agent.pid} ready (health ${agent.health}, log ${agentLog})`);
  if (opts.podCache) {
    for (let i = 0; world.api.openWatches === 0; i++) {
      if (i > 400) throw new Error("--pod-cache: the agent did not open its watch of the node's pods within 20 s");
      await sleep(50);
    }
    log(`the agent's pod cache watches node ${SOAK_NODE}`);
  }

  // containerd reloads the chained conflist by itself.
  for (let i = 0; ; i++) {
    const info = await world.cri.statusInfo();
    const cni = JSON.parse(info.cniconfig ?? '{}') as { Networks?: { IFName: string; Config: { Plugins: { Network: { type: string } }[] } }[] };
    const types = cni.Networks?.find((n) => n.IFName === 'eth0')?.Config.Plugins.map((p) => p.Network.type) ?? [];
    if (types.join() === `bridge,portmap,${PLUGIN_TYPE}`) break;
    if (i > 200) throw new Error(`containerd did not load the chained conflist: ${types.join()}`);
    await sleep(50);
  }

  // The reference ruleset: every pod is the same injected template, so the same rules.
  const probe = injectedPod({ name: 'soak-reference-00000', namespace: 'soak' });
  const reference = referenceRuleset(world.rulesForPod(probe));
  if (!/table inet istio-proxy-nat /.test(reference)) throw new Error(`unexpected reference ruleset:\n${reference}`);

  const failures: { pod: string; at: number; error: string }[] = [];
  const samples: Sample[] = [];
  const runMs: number[] = [];
  const cycleMs: number[] = [];
  let churned = 0;
  let fromCache = 0;
  let seq = 0;
  let stopping = false;
  const t0 = performance.now();
  const tSec = () => (performance.now() - t0) / 1000;
  const endAt = t0 + opts.minutes * 60_000;

  const sample = async () => {
    const t = Math.round(tSec() * 10) / 10;
    const s = procStats(agent.pid);
    const h = await heapStats(agent.metrics);
    samples.push({ t, ...s, ...h, podsChurned: churned, failures: failures.length });
  };
  await sample();
  const sampler = setInterval(() => {
    sample().catch((e) => failures.push({ pod: '(sampler)', at: tSec(), error: `sampling the agent failed: ${(e as Error).message}` }));
  }, opts.sampleS * 1000);
  let lastReport = 0;

  async function cycle(spec: PodSpecLite): Promise<void> {
    const c0 = performance.now();
    world.api.addPod(spec.pod, opts.podCache ? SOAK_NODE : undefined);
    let pod: RunningPod | undefined;
    try {
      pod = await world.runPod(spec);
      runMs.push(pod.runMs);
      const st = await world.status(pod.id);
      if (st.state !== 'SANDBOX_READY') throw new Error(`state ${st.state} after RunPodSandbox`);
      const got = await nft(pod.nsPath);
      if (got !== reference) throw new Error(`the pod netns does not hold the reference ruleset:\n${got}`);
      const reqs = world.api.requestsFor(spec.namespace, spec.name).map((r) => `${r.method} ${r.authorized} ${r.status}`);
      // With the pod cache, no GET when the watch had delivered the pod (the usual case), else one.
      if (reqs.join() !== 'GET true 200' && !(opts.podCache && reqs.length === 0)) {
        throw new Error(`API requests for the pod: ${JSON.stringify(reqs)} (expected one authorized GET${opts.podCache ? ' or, from the cache, none' : ''})`);
      }
      if (reqs.length === 0) fromCache++;
      await world.cri.stopPodSandbox(pod.id);
      const st2 = await world.status(pod.id);
      if (st2.state !== 'SANDBOX_NOTREADY') throw new Error(`state ${st2.state} after StopPodSandbox`);
      if (world.allocatedIps().includes(pod.ip)) throw new Error(`host-local still holds ${pod.ip} after StopPodSandbox`);
      await world.cri.removePodSandbox(pod.id);
      if (fs.existsSync(pod.nsPath)) throw new Error('netns mount still there after RemovePodSandbox');
      churned++;
      cycleMs.push(performance.now() - c0);
    } catch (e) {
      failures.push({ pod: spec.name, at: Math.round(tSec()), error: (e as Error).message.slice(0, 2000) });
      log(`FAILURE ${spec.name}: ${(e as Error).message.split('\n')[0]}`);
      if (pod) {
        await world.cri.stopPodSandbox(pod.id).catch(() => undefined);
        await world.cri.removePodSandbox(pod.id).catch(() => undefined);
      }
    } finally {
      if (pod) {
        world.release(pod);
        world.pods.splice(world.pods.indexOf(pod), 1);
      }
    }
  }

  async function worker(): Promise<void> {
    while (!stopping && performance.now() < endAt) {
      if (agent.exit) {
        failures.push({ pod: '(agent)', at: tSec(), error: `the agent exited: ${JSON.stringify(agent.exit)}\n${agent.tail.slice(-20).join('\n')}` });
        stopping = true;
        return;
      }
      const n = seq++;
      await cycle(injectedPod({ name: `soak-${n}-${Math.random().toString(36).slice(2, 7)}`, namespace: 'soak' }));
      if (tSec() - lastReport >= 60) {
        lastReport = tSec();
        const s = samples[samples.length - 1];
        log(`${Math.round(tSec())} s: ${churned} pods churned, ${failures.length} failures, agent RSS ${s?.rssKb} kB, ${s?.fds} fds`);
      }
    }
  }

  const onSignal = () => {
    stopping = true;
  };
  process.once('SIGUSR1', onSignal); // stop early, with a report
  log(`churning for ${opts.minutes} min with ${opts.inflight} pods in flight`);
  await Promise.all(Array.from({ length: opts.inflight }, () => worker()));
  clearInterval(sampler);
  await sample();
  const churnS = tSec();

  // After the churn: nothing left behind by the pods.
  const leftovers: string[] = [];
  const sandboxes = await world.cri.listPodSandbox();
  if (sandboxes.length) leftovers.push(`${sandboxes.length} sandboxes still listed`);
  if (world.allocatedIps().length) leftovers.push(`IPs still allocated: ${world.allocatedIps().join(', ')}`);
  if (world.netnsMounts().length) leftovers.push(`${world.netnsMounts().length} netns mounts left`);
  const ports = spawnSync('ip', ['-o', 'link', 'show', 'master', world.bridge], { encoding: 'utf8' }).stdout.trim();
  if (ports) leftovers.push(`veths left on the bridge: ${ports.split('\n').length}`);
  // The fast path served every ADD: the agent logged each one, and no plugin process wrote to
  // containerd's log (the standalone plugin, the shim's fallback, logs to stderr).
  if (agent.adds !== seq) leftovers.push(`the agent logged ${agent.adds} ADDs for ${seq} pods started`);
  const standalone = world.pluginLog().filter((l) => JSON.stringify(l).includes('soak/')).length;
  if (standalone) leftovers.push(`${standalone} plugin-process log lines in containerd's log: the shim fell back to the standalone plugin`);
  const readyz = await get(`http://${agent.health}/readyz`);
  if (readyz !== 200) leftovers.push(`agent /readyz ${readyz} at the end`);
  for (const l of leftovers) failures.push({ pod: '(after churn)', at: Math.round(churnS), error: l });

  // Stop the agent as the DaemonSet would (SIGTERM), then the node.
  agent.proc.kill('SIGTERM');
  await Promise.race([agent.exited, sleep(10_000)]);
  if (!agent.exit) {
    failures.push({ pod: '(agent)', at: Math.round(tSec()), error: 'the agent ignored SIGTERM for 10 s' });
    agent.proc.kill('SIGKILL');
    await agent.exited;
  } else if (agent.exit.code !== 0) {
    failures.push({ pod: '(agent)', at: Math.round(tSec()), error: `the agent exited ${JSON.stringify(agent.exit)} on SIGTERM` });
  }
  const problems = await world.teardown();
  for (const p of problems) failures.push({ pod: '(teardown)', at: Math.round(tSec()), error: p });

  // Figures.
  const warm = samples.filter((s) => s.t >= opts.warmupMin * 60);
  const per10 = (k: 'rssKb' | 'fds' | 'heapUsedKb' | 'heapTotalKb') =>
    slope(
      warm.map((s) => s.t),
      warm.map((s) => s[k]),
    ) * 600;
  const first = samples[0];
  const lastS = samples[samples.length - 1];
  const firstWarm = warm[0] ?? first;
  const q = (xs: number[], p: number) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : NaN;
  };
  const summary = {
    minutes: opts.minutes,
    churnSeconds: Math.round(churnS),
    inflight: opts.inflight,
    podsChurned: churned,
    podsStarted: seq,
    podsPerMinute: Math.round((churned / churnS) * 600) / 10,
    podCache: opts.podCache,
    podsFromCache: fromCache,
    failures: failures.length,
    rssKb: {
      start: first.rssKb,
      afterWarmup: firstWarm.rssKb,
      end: lastS.rssKb,
      min: Math.min(...samples.map((s) => s.rssKb)),
      max: Math.max(...samples.map((s) => s.rssKb)),
    },
    fds: {
      start: first.fds,
      afterWarmup: firstWarm.fds,
      end: lastS.fds,
      min: Math.min(...samples.map((s) => s.fds)),
      max: Math.max(...samples.map((s) => s.fds)),
    },
    heapUsedKb: { start: first.heapUsedKb, afterWarmup: firstWarm.heapUsedKb, end: lastS.heapUsedKb },
    heapTotalKb: { start: first.heapTotalKb, afterWarmup: firstWarm.heapTotalKb, end: lastS.heapTotalKb },
    slopePer10Min: {
      rssKb: Math.round(per10('rssKb') * 10) / 10,
      fds: Math.round(per10('fds') * 100) / 100,
      heapUsedKb: Math.round(per10('heapUsedKb') * 10) / 10,
      heapTotalKb: Math.round(per10('heapTotalKb') * 10) / 10,
      samples: warm.length,
      warmupMinutes: opts.warmupMin,
    },
    runPodSandboxMs: { p50: Math.round(q(runMs, 0.5)), p95: Math.round(q(runMs, 0.95)), max: Math.round(Math.max(...runMs)) },
    cycleMs: { p50: Math.round(q(cycleMs, 0.5)), p95: Math.round(q(cycleMs, 0.95)) },
    agentServedAdds: agent.adds,
    agentLogLines: agent.lines,
    agentWarnOrErrorLines: agent.warnOrError,
    loadavg: fs.readFileSync('/proc/loadavg', 'utf8').trim(),
  };
  fs.writeFileSync(opts.out, `${JSON.stringify({ summary, failures, samples }, null, 1)}\n`);
  const p = (s: string) => process.stdout.write(`${s}\n`);
  p('');
  p(`soak: ${summary.churnSeconds} s of churn, ${opts.inflight} pods in flight (fast path: shim → agent ${agent.pid})`);
  p(`  pods churned (Run → rules checked → Stop → Remove): ${churned} (${summary.podsPerMinute}/min), started ${seq}`);
  p(`  ADDs served by the agent (fast path): ${agent.adds}; failures: ${failures.length}`);
  if (opts.podCache) p(`  pods the agent's pod cache answered (no GET): ${fromCache} of ${churned}`);
  for (const f of failures.slice(0, 20)) p(`    ${f.pod} at ${f.at} s: ${f.error.split('\n')[0]}`);
  p(
    `  agent RSS kB: start ${summary.rssKb.start}, after warm-up ${summary.rssKb.afterWarmup}, end ${summary.rssKb.end} (min ${summary.rssKb.min}, max ${summary.rssKb.max})`,
  );
  p(
    `  agent fds: start ${summary.fds.start}, after warm-up ${summary.fds.afterWarmup}, end ${summary.fds.end} (min ${summary.fds.min}, max ${summary.fds.max})`,
  );
  p(
    `  agent V8 heap used kB: start ${summary.heapUsedKb.start}, after warm-up ${summary.heapUsedKb.afterWarmup}, end ${summary.heapUsedKb.end}; heap total kB: ${summary.heapTotalKb.start}, ${summary.heapTotalKb.afterWarmup}, ${summary.heapTotalKb.end}`,
  );
  p(
    `  least-squares slope per 10 min after ${opts.warmupMin} min warm-up (${warm.length} samples): RSS ${summary.slopePer10Min.rssKb} kB, fds ${summary.slopePer10Min.fds}, heap used ${summary.slopePer10Min.heapUsedKb} kB, heap total ${summary.slopePer10Min.heapTotalKb} kB`,
  );
  p(
    `  RunPodSandbox p50/p95/max ${summary.runPodSandboxMs.p50}/${summary.runPodSandboxMs.p95}/${summary.runPodSandboxMs.max} ms; cycle p50/p95 ${summary.cycleMs.p50}/${summary.cycleMs.p95} ms`,
  );
  p(`  agent log: ${agent.lines} lines, ${agent.warnOrError} warn/error (${agentLog}); load ${summary.loadavg}`);
  p(`  samples: ${opts.out}`);
  return failures.length === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`soak failed: ${(e as Error).stack}\n`);
    process.exit(1);
  },
);
