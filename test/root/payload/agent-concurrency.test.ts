// 100 ADD/DEL pairs on 100 fresh network namespaces through the fast path, all at once: the
// payload's C shim (what the runtime executes) -> cni-shim.sock -> the node agent running as a
// process, its kubeconfig written by its own installer for a local HTTPS API stand-in. The
// standalone plugin is made unreachable (ISTIO_CNI_SHIM_PLUGIN points nowhere), so a single
// fallback would show as a failed ADD. Every ADD succeeds with exactly the tables the pod's
// capture config names, a second ADD leaves the same ruleset, every DEL leaves none. Afterwards
// nothing is left: no shim process, netns or netns mount, no new file or socket in the run dir,
// and the agent holds no more descriptors or threads than before. Needs root.
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Pod } from '../../../src/kube/pod';
import { AgentProc, startAgentFor, stopAgentCleanly } from '../../support/agent-proc';
import { until } from '../../support/until';
import { pluginConf, podCniEnv } from '../../support/cni-fakes';
import { ApiStandIn, startApiStandIn } from '../../support/kube-api';
import {
  CniOut,
  PairRunner,
  addCheckDel,
  assertNetnsGone,
  deleteNetns,
  newPairStats,
  mixedPod,
  okRun,
  podNetns,
  prevResultIn,
} from '../../support/concurrent-pods';
import { SHIM_NAME, ensurePayload, runAsync } from '../../support/payload';
import { requireRootAndTools } from '../../support/root';

const PODS = Number(process.env.ICTS_CONC_PODS ?? 100);
const REPEAT_EVERY = 4;
/** `ip netns exec nft` checks at once (the shims themselves all run at once). */
const CHECKERS = 8;
const TAG = `icts-fconc-${process.pid}`;

let api: ApiStandIn;
let agent: AgentProc;
let shim: string;
const netnsNames: string[] = [];

before(async () => {
  requireRootAndTools('ip', 'nft', 'openssl', 'flock');
  shim = path.join(ensurePayload(), SHIM_NAME);
  api = await startApiStandIn();
  agent = await startAgentFor(api);
});

after(async () => {
  deleteNetns(netnsNames, 'ignore');
  if (agent) await stopAgentCleanly(agent);
  await api?.close();
});

const prevResult = (netns: string, i: number) => prevResultIn(78, netns, i);

async function cni(command: string, netns: string, pod: Pod, i: number): Promise<CniOut> {
  const { name, namespace } = pod.metadata as { name: string; namespace: string };
  const t0 = process.hrtime.bigint();
  const r = await runAsync(shim, [], {
    env: {
      PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
      ...podCniEnv(command, netns, { name, namespace }),
      ISTIO_CNI_SHIM_DEBUG: '1',
      ISTIO_CNI_SHIM_PLUGIN: '/nonexistent/icts-no-fallback',
    },
    stdin: pluginConf(agent.dirs.run, prevResult(netns, i), { plugin_log_level: 'info', pod_lookup_attempts: 3, pod_lookup_interval_ms: 50 }),
    timeoutMs: 60_000,
  });
  return { ...r, ms: Number(process.hrtime.bigint() - t0) / 1e6 };
}

/** A small semaphore for the nft checks. */
let slots = CHECKERS;
const queue: (() => void)[] = [];
async function limited<T>(f: () => Promise<T>): Promise<T> {
  if (slots === 0) await new Promise<void>((r) => queue.push(r));
  else slots--;
  try {
    return await f();
  } finally {
    const next = queue.shift();
    if (next) next();
    else slots++;
  }
}

const podFor = (i: number) => mixedPod('fconc', i);

/** Shim processes this test started that are still running (others may run the same payload). */
function shimProcesses(): number[] {
  const out: number[] = [];
  for (const pid of fs.readdirSync('/proc').filter((d) => /^[0-9]+$/.test(d))) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === process.pid && fs.readlinkSync(`/proc/${pid}/exe`) === shim) out.push(Number(pid));
    } catch {
      /* exited, or a kernel thread */
    }
  }
  return out;
}

const pct = (xs: number[], p: number) => Math.round([...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]);

test(`${PODS} ADD (+ ADD again on every ${REPEAT_EVERY}th) / DEL pairs at once on ${PODS} fresh netns through shim -> agent: exact tables, idempotent, nothing leaked`, async (t) => {
  // Warm the agent up (API connection, addon, libuv threads) so that "before" is its steady state.
  const warm = `${TAG}-warm`;
  execFileSync('ip', ['netns', 'add', warm]);
  netnsNames.push(warm);
  api.addPod(podFor(PODS));
  okRun(await cni('ADD', `/run/netns/${warm}`, podFor(PODS), PODS), 'warm-up ADD');
  okRun(await cni('DEL', `/run/netns/${warm}`, podFor(PODS), PODS), 'warm-up DEL');
  execFileSync('ip', ['netns', 'del', netnsNames.pop()!]);
  await new Promise((r) => setTimeout(r, 200));
  const fdsBefore = agent.fds().length;
  const threadsBefore = agent.threads();
  const runDirBefore = fs.readdirSync(agent.dirs.run).sort();
  const getsBefore = api.requestLines.length;
  const outBefore = agent.out.length;

  const t0 = Date.now();
  netnsNames.push(...podNetns(TAG, PODS, api, podFor));
  const setupMs = Date.now() - t0;

  const pairs = newPairStats();
  let inFlight = 0;
  let maxInFlight = 0;
  let peakShims = 0;
  const sampler = setInterval(() => {
    peakShims = Math.max(peakShims, shimProcesses().length);
  }, 250);
  const t1 = Date.now();
  try {
    const runner: PairRunner = {
      // Counts the ADDs in flight (a pod's second ADD only starts after its first has ended).
      cni: async (command, nsPath, pod, i) => {
        if (command === 'DEL') return cni(command, nsPath, pod, i);
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        try {
          return await cni(command, nsPath, pod, i);
        } finally {
          inFlight--;
        }
      },
      prevResult,
      look: limited,
      check: (r, what) => assert.equal(r.stderr, '', `${what}: the shim had nothing to say (no fallback)`),
    };
    await Promise.all(
      [...Array(PODS).keys()].map(async (i) => {
        await addCheckDel(runner, netnsNames[i], podFor(i), i, i % REPEAT_EVERY === 0, pairs);
      }),
    );
  } finally {
    clearInterval(sampler);
  }
  const wallMs = Date.now() - t1;
  const { addMs, delMs, repeated } = pairs;
  deleteNetns(netnsNames);

  // Nothing leaked.
  assert.deepEqual(shimProcesses(), [], 'no shim process left');
  assertNetnsGone(TAG);
  assert.deepEqual(fs.readdirSync(agent.dirs.run).sort(), runDirBefore, 'the run dir holds what it held (kubeconfig, log.sock, cni-shim.sock)');
  // The burst opens up to 8 kept-alive API connections; the stand-in closes idle ones after 5 s
  // (Node's keepAliveTimeout), so give them that long before counting.
  await until('the agent back to its descriptors', () => agent.fds().length <= fdsBefore, 8000).catch(() => undefined);
  const fdsAfter = agent.fds().length;
  const fdNames = () =>
    agent.fds().map((fd) => {
      try {
        return fs.readlinkSync(`/proc/${agent.pid}/fd/${fd}`);
      } catch {
        return '?';
      }
    });
  const threadsAfter = agent.threads();
  assert.ok(fdsAfter <= fdsBefore, `agent fds: ${fdsBefore} before, ${fdsAfter} after: ${fdNames().join(' ')}`);
  assert.ok(threadsAfter <= threadsBefore, `agent threads: ${threadsBefore} before, ${threadsAfter} after`);
  const holders = agent
    .fds()
    .map((fd) => {
      try {
        return fs.readlinkSync(`/proc/${agent.pid}/fd/${fd}`);
      } catch {
        return '';
      }
    })
    .filter((l) => l.startsWith('net:'));
  assert.deepEqual(holders, [], 'the agent holds no netns descriptor');
  // A failed GET attempt is retried (and logged as a warning): under heavy load a kept-alive
  // connection can be closed by the server as it is reused. Counted, reported, never lost.
  const out = agent.out.slice(outBefore);
  const retries = out.filter((l) => l.includes('pod lookup failed (attempt'));
  // A failed attempt may or may not have reached the API (a reset connection never does).
  const gets = api.requestLines.length - getsBefore;
  assert.ok(
    gets >= PODS + repeated && gets <= PODS + repeated + retries.length,
    `one pod GET per ADD (${PODS + repeated}) plus at most one per retried attempt (${retries.length}), by the agent: ${gets}`,
  );
  const trouble = out.filter((l) => /\t(warn|error)\t/.test(l) && !l.includes('pod lookup failed (attempt'));
  assert.deepEqual(trouble, [], 'no other warning or error in the agent output');
  if (retries.length)
    t.diagnostic(`retried pod GETs: ${retries.length}: ${retries.map((l) => l.replace(/^.*pod lookup failed/, 'pod lookup failed')).join(' | ')}`);
  assert.equal(maxInFlight, PODS, 'every ADD was in flight at once');

  t.diagnostic(
    `${PODS} netns (setup ${setupMs} ms); ${PODS * 2 + repeated} shim runs (${repeated} repeated ADDs) in ${wallMs} ms wall; ` +
      `${maxInFlight} ADDs in flight at once, peak ${peakShims} shim processes seen`,
  );
  t.diagnostic(
    `ADD p50 ${pct(addMs, 0.5)} ms, p95 ${pct(addMs, 0.95)} ms, max ${Math.round(Math.max(...addMs))} ms; ` +
      `DEL p50 ${pct(delMs, 0.5)} ms, p95 ${pct(delMs, 0.95)} ms, max ${Math.round(Math.max(...delMs))} ms`,
  );
  t.diagnostic(`agent fds ${fdsBefore} -> ${fdsAfter}, threads ${threadsBefore} -> ${threadsAfter}`);
});
