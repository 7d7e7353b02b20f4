// Fault injection (issue 8, item 3): the Kubernetes API down, slow, stalled, answering 500 or
// 429, and the pod netns deleted while ADD waits for the API. Each fault is run through the
// standalone plugin exactly as a runtime runs it, and through the fast path (the payload's C shim
// -> the node agent running as a process, whose installer wrote the kubeconfig from its service
// account). Asserted on real state: the CNI error JSON (code, message naming the pod or netns),
// one GET per configured attempt, the time ADD takes to fail, no table in the netns, and nothing
// leaked (processes, mounts, netns, the agent's fds). Needs root; fails loudly without it.
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { AgentProc, startAgentFor, stopAgentCleanly } from '../../support/agent-proc';
import { until } from '../../support/until';
import { ApiStandIn, startApiStandIn } from '../../support/kube-api';
import { pluginConf, sidecarPod } from '../../support/cni-fakes';
import { BIN, CniRun } from '../../support/cni-run';
import { SHIM_NAME, ensurePayload, runAsync } from '../../support/payload';
import { makeNetns, netnsTableNames, requireRootAndTools } from '../../support/root';

const ATTEMPTS = 3;
const INTERVAL_MS = 250;
/** The API client's per-request deadline (src/kube/client.ts). */
const CLIENT_DEADLINE_MS = 5000;

let api: ApiStandIn;
let agent: AgentProc;
let shim: string;
const figures: string[] = [];

before(async () => {
  requireRootAndTools('ip', 'nft', 'openssl', 'flock');
  shim = `${ensurePayload()}/${SHIM_NAME}`;
  api = await startApiStandIn();
  api.addPod(sidecarPod({ name: 'web-1', namespace: 'shop' }));
  agent = await startAgentFor(api, { args: ['--agent-log-level', 'debug'] });
});

after(async () => {
  if (agent) await stopAgentCleanly(agent);
  await api?.close();
  // Printed once, for docs/reliability.md.
  if (figures.length) console.log(`# faults-api figures\n${figures.map((f) => `#   ${f}`).join('\n')}`);
});

type Path = 'standalone' | 'shim->agent';

const netconf = (p: Path, netns: string, over: Record<string, unknown> = {}): string =>
  pluginConf(
    p === 'standalone' ? api.runDir : agent.dirs.run,
    { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: netns }], ips: [{ address: '10.9.0.2/24', interface: 0 }] },
    { pod_lookup_attempts: ATTEMPTS, pod_lookup_interval_ms: INTERVAL_MS, ...over },
  );

/** ADD (or another command) through one path; the shim must be answered by the agent (no standalone to fall back to). */
async function cni(p: Path, netns: string, pod: { namespace: string; name: string }, conf: Record<string, unknown> = {}, command = 'ADD'): Promise<CniRun> {
  const env = {
    PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: command,
    CNI_CONTAINERID: `ctr-${pod.name}`,
    CNI_NETNS: netns,
    CNI_IFNAME: 'eth0',
    CNI_PATH: '/opt/cni/bin',
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name}`,
    ISTIO_CNI_SHIM_DEBUG: '1',
    ISTIO_CNI_SHIM_PLUGIN: '/nonexistent/icts-no-fallback',
  };
  const t0 = Date.now();
  const r =
    p === 'standalone'
      ? await runAsync(process.execPath, [BIN], { env, stdin: netconf(p, netns, conf), timeoutMs: 25_000 })
      : await runAsync(shim, [], { env, stdin: netconf(p, netns, conf), timeoutMs: 25_000 });
  return { ...r, ms: Date.now() - t0 };
}

interface CniErr {
  cniVersion: string;
  code: number;
  msg: string;
  details: string;
}

function cniError(r: CniRun): CniErr {
  assert.equal(r.code, 1, `expected a CNI error, got exit ${r.code}: ${r.stdout}${r.stderr}`);
  assert.ok(r.stdout.endsWith('}\n') && r.stdout.indexOf('\n') === r.stdout.length - 1, `one JSON line on stdout: ${JSON.stringify(r.stdout)}`);
  const e = JSON.parse(r.stdout) as CniErr;
  assert.equal(e.cniVersion, '1.0.0');
  return e;
}

/** The netns's tables as "family name", sorted. */
const tables = netnsTableNames;

/** "pod lookup failed (attempt i of n)" lines the run logged (the plugin's stderr, or the agent's output since `from`). */
function attemptsLogged(p: Path, r: CniRun, from: number): number[] {
  const text = p === 'standalone' ? r.stderr : agent.out.slice(from).join('\n');
  return [...text.matchAll(/pod lookup failed \(attempt (\d+) of (\d+)\)/g)].map((m) => Number(m[1]));
}

/** Children of this process still running (the plugin, the shim, ip/nft helpers). */
function ourChildren(): number[] {
  const pids: number[] = [];
  for (const d of fs.readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === process.pid && Number(d) !== agent.pid) pids.push(Number(d));
    } catch {
      /* exited meanwhile */
    }
  }
  return pids;
}

const WEB = { namespace: 'shop', name: 'web-1' };
const OWN_AGENT = { namespace: 'istio-system', name: 'istio-cni-node-x7k2p' };

for (const p of ['standalone', 'shim->agent'] as Path[]) {
  describe(`Kubernetes API faults, ${p}`, () => {
    let ns: ReturnType<typeof makeNetns>;
    before(() => {
      ns = makeNetns('fltapi');
    });
    after(() => ns?.remove());

    /** One fault: ADD fails with `code`, one GET per attempt, no table; its duration is recorded. */
    async function expectFailure(
      what: string,
      opts: { code: number; details: RegExp; attempts?: number; countRequests?: boolean; conf?: Record<string, unknown>; minMs: number; maxMs: number },
    ) {
      const attempts = opts.attempts ?? ATTEMPTS;
      const before = api.requestLines.length;
      const outFrom = agent.out.length;
      const r = await cni(p, ns.path, WEB, { pod_lookup_attempts: attempts, ...opts.conf });
      const e = cniError(r);
      assert.equal(e.code, opts.code, JSON.stringify(e));
      assert.equal(e.msg, opts.code === 11 ? 'cannot reach the Kubernetes API to get pod shop/web-1' : 'failed to get pod shop/web-1');
      assert.match(e.details, opts.details);
      assert.match(e.details, new RegExp(`after ${attempts} attempts in \\d+ ms\\)$`));
      if (opts.countRequests !== false) assert.equal(api.requestLines.length - before, attempts, 'one GET per attempt');
      await until('every attempt logged', () => attemptsLogged(p, r, outFrom).length >= attempts, 2000).catch(() => undefined);
      assert.deepEqual(
        attemptsLogged(p, r, outFrom),
        Array.from({ length: attempts }, (_, i) => i + 1),
        'each attempt logged',
      );
      assert.ok(r.ms >= opts.minMs && r.ms <= opts.maxMs, `${what}: ADD failed after ${r.ms} ms, expected ${opts.minMs}-${opts.maxMs}`);
      assert.deepEqual(tables(ns.name), [], 'nothing applied');
      figures.push(`${p}: ${what}: code ${e.code} after ${attempts} attempts, ADD failed in ${r.ms} ms`);
      return r;
    }

    test('API refusing connections: bounded retries, code 11; our own agent pod still starts', async () => {
      await api.refuse();
      try {
        await expectFailure('connection refused', {
          code: 11,
          details: /^GET \/api\/v1\/namespaces\/shop\/pods\/web-1: .*ECONNREFUSED/,
          countRequests: false,
          minMs: (ATTEMPTS - 1) * INTERVAL_MS,
          maxMs: 6000,
        });
        const before = api.requestLines.length;
        const own = await cni(p, ns.path, OWN_AGENT);
        assert.equal(own.code, 0, `own agent pod ADD: ${own.stdout}${own.stderr}`);
        assert.equal((JSON.parse(own.stdout) as { interfaces: unknown[] }).interfaces.length, 1, 'prevResult passed through');
        assert.equal(api.requestLines.length, before);
        assert.deepEqual(tables(ns.name), []);
        figures.push(`${p}: own agent pod while the API refuses: exit 0 in ${own.ms} ms`);
      } finally {
        await api.reopen();
      }
      // And back: the same pod is captured once the API answers.
      const ok = await cni(p, ns.path, WEB);
      assert.equal(ok.code, 0, ok.stdout + ok.stderr);
      assert.deepEqual(tables(ns.name), ['inet istio-proxy-nat']);
      assert.equal((await cni(p, ns.path, WEB, {}, 'DEL')).code, 0);
      assert.deepEqual(tables(ns.name), []);
    });

    for (const status of [500, 429]) {
      test(`API answering ${status}: one GET per attempt, then code 11 naming the pod and the status`, async () => {
        api.failWith = {
          status,
          headers: status === 429 ? { 'retry-after': '1' } : {},
          body: () => JSON.stringify({ kind: 'Status', message: status === 429 ? 'too many requests, please try again later' : 'etcdserver: leader changed' }),
        };
        try {
          await expectFailure(`HTTP ${status}`, {
            code: 11,
            details: new RegExp(`^GET /api/v1/namespaces/shop/pods/web-1: HTTP ${status} \\(`),
            // 429 with Retry-After: 1 is honoured: 1 s between attempts instead of the interval.
            minMs: (ATTEMPTS - 1) * (status === 429 ? 1000 : INTERVAL_MS),
            maxMs: 7000,
          });
        } finally {
          api.failWith = undefined;
        }
      });
    }

    test('API answering only after 5.5 s (past the 5 s deadline): each attempt gives up at 5 s, then code 11', async () => {
      api.delayMs = CLIENT_DEADLINE_MS + 500;
      // Two attempts through the standalone plugin (the pause between them counted), one through the agent (time).
      const n = p === 'standalone' ? 2 : 1;
      try {
        await expectFailure('slow (answers after 5.5 s)', {
          code: 11,
          details: /no answer within 5000 ms/,
          attempts: n,
          minMs: n * CLIENT_DEADLINE_MS + (n - 1) * INTERVAL_MS - 100,
          maxMs: n * CLIENT_DEADLINE_MS + (n - 1) * INTERVAL_MS + 4000,
        });
      } finally {
        api.delayMs = undefined;
      }
    });

    test('API sending headers, then the body one byte a second: the attempt still ends at 5 s, code 11', async () => {
      api.trickleMs = 1000;
      try {
        await expectFailure('stalled body (1 byte/s)', {
          code: 11,
          details: /within 5000 ms/,
          attempts: 1,
          minMs: CLIENT_DEADLINE_MS - 100,
          maxMs: CLIENT_DEADLINE_MS + 4000,
        });
      } finally {
        api.trickleMs = undefined;
      }
    });

    test('API answering after 1.5 s (within the deadline): ADD succeeds, rules applied', async () => {
      api.delayMs = 1500;
      try {
        const r = await cni(p, ns.path, WEB);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assert.ok(r.ms >= 1500, `${r.ms} ms`);
        assert.deepEqual(tables(ns.name), ['inet istio-proxy-nat']);
        figures.push(`${p}: slow but within the deadline (1.5 s): exit 0 in ${r.ms} ms`);
      } finally {
        api.delayMs = undefined;
      }
      assert.equal((await cni(p, ns.path, WEB, {}, 'DEL')).code, 0);
      assert.deepEqual(tables(ns.name), []);
    });
  });
}

describe('the netns deleted while ADD waits for the API', () => {
  /** Holds the API's answer until the netns is gone: ADD is past its start (netns checked) and before the apply. */
  async function deleteMidAdd(p: Path) {
    const ns = makeNetns('fltdel');
    const ino = fs.statSync(ns.path).ino;
    const fdsBefore = agent.fds().length;
    const threadsBefore = agent.threads();
    let release!: () => void;
    api.gate = new Promise<void>((r) => (release = r));
    const before = api.requestLines.length;
    let r: CniRun;
    try {
      const run = cni(p, ns.path, WEB);
      await api.waitForRequests(before + 1);
      execFileSync('ip', ['netns', 'del', ns.name]);
      assert.equal(fs.existsSync(ns.path), false);
      release();
      r = await run;
    } finally {
      api.gate = undefined;
      release?.();
      ns.remove();
    }
    return { r, ino, fdsBefore, threadsBefore, ns };
  }

  /** No process, fd, mount or /run/netns entry of ours refers to the netns any more. */
  function assertNothingLeaked(name: string, ino: number) {
    assert.deepEqual(ourChildren(), [], 'no plugin, shim or helper process left');
    assert.equal(fs.existsSync(`/run/netns/${name}`), false);
    assert.ok(!fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(name), 'no netns mount left');
    const holders: string[] = [];
    for (const pid of fs.readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
      try {
        if (fs.readlinkSync(`/proc/${pid}/ns/net`) === `net:[${ino}]`) holders.push(`${pid} (ns)`);
        for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
          try {
            if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === `net:[${ino}]`) holders.push(`${pid} fd ${fd}`);
          } catch {
            /* closed meanwhile */
          }
        }
      } catch {
        /* exited meanwhile */
      }
    }
    assert.deepEqual(holders, [], `nothing holds the deleted netns net:[${ino}] (it is freed)`);
  }

  test('standalone: code 104 naming the netns; nothing applied anywhere, nothing leaked', async () => {
    const { r, ino, ns } = await deleteMidAdd('standalone');
    const e = cniError(r);
    assert.equal(e.code, 104, JSON.stringify(e));
    assert.ok(e.msg.includes(ns.path), `the message names the netns: ${e.msg}`);
    assert.ok(!/\n/.test(e.details), e.details);
    assertNothingLeaked(ns.name, ino);
    figures.push(`standalone: netns deleted mid-ADD: code 104 (${e.msg}: ${e.details}) in ${r.ms} ms`);
  });

  test('shim->agent: code 104 naming the netns (the shim sees the path is gone); the agent lets the netns go (fds, threads back)', async () => {
    const { r, ino, fdsBefore, threadsBefore, ns } = await deleteMidAdd('shim->agent');
    // The shim opened CNI_NETNS before the deletion and the agent works on that descriptor, so the
    // agent's ADD succeeds into a namespace that is about to vanish; the shim then finds the path
    // gone and fails the ADD with the standalone plugin's code.
    const e = cniError(r);
    assert.equal(e.code, 104, JSON.stringify(e));
    assert.ok(e.msg.includes(ns.path), `the message names the netns: ${e.msg}`);
    // Up to the stand-in's 5 s keep-alive: a pooled API connection opened meanwhile closes by then.
    await until('the agent closed the request descriptor', () => agent.fds().length <= fdsBefore, 8000).catch(() => undefined);
    assert.ok(agent.fds().length <= fdsBefore, `agent fds ${fdsBefore} before, ${agent.fds().length} after`);
    assert.ok(agent.threads() <= threadsBefore, `agent threads ${threadsBefore} before, ${agent.threads()} after`);
    assertNothingLeaked(ns.name, ino);
    figures.push(`shim->agent: netns deleted mid-ADD: exit ${r.code} ${r.stdout.trim()} in ${r.ms} ms; agent fds ${fdsBefore} -> ${agent.fds().length}`);
  });
});

test('after all faults: the agent is still serving and holds no more descriptors than the faults needed', async () => {
  const ns = makeNetns('fltend');
  try {
    const r = await cni('shim->agent', ns.path, WEB);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(tables(ns.name), ['inet istio-proxy-nat']);
  } finally {
    ns.remove();
  }
  assert.ok(
    !agent.out.some((l) => /CNI request failed inside the agent|uncaught|unhandled/i.test(l)),
    agent.out.filter((l) => /failed inside|uncaught|unhandled/i.test(l)).join('\n'),
  );
  assert.equal(spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.includes(`-${process.pid}-`), false);
});
