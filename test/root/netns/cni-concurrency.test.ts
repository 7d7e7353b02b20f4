// 100 ADD/DEL pairs on 100 fresh network namespaces, run concurrently with the standalone plugin
// binary as a container runtime runs it (CNI_* env, netconf + prevResult on stdin, kubeconfig
// for a local HTTPS API stand-in). Every ADD succeeds and leaves exactly the tables the pod's
// capture config names; a second ADD on the same netns leaves the same ruleset; every DEL leaves
// no table. Afterwards nothing is left: no plugin process, netns, netns mount, file in the run
// dir or fd in this process. Needs root; fails loudly without it.
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Pod } from '../../../src/kube/pod';
import { ApiStandIn, startApiStandIn } from '../../support/kube-api';
import { addCheckDel, assertNetnsGone, deleteNetns, mixedPod, newPairStats, podNetns, prevResultIn } from '../../support/concurrent-pods';
import { CniRun, runPlugin } from '../../support/cni-run';
import { pluginConf, podCniEnv } from '../../support/cni-fakes';
import { PACKAGE_ROOT } from '../../support/conformance';
import { requireRootAndTools } from '../../support/root';
import { tempDir } from '../../support/tmp';

const PODS = Number(process.env.ICTS_CONC_PODS ?? 100);
/** Plugin processes at once: enough to overlap on a 2-core machine without thrashing it. */
const PARALLEL = Number(process.env.ICTS_CONC_PARALLEL ?? 8);
const TAG = `icts-conc-${process.pid}`;
/** A second ADD on every n-th netns (idempotence), during the same concurrent run. */
const REPEAT_EVERY = 4;

let api: ApiStandIn;
const netnsNames: string[] = [];
let pkg: string;
let BIN: string;

/**
 * A private copy of the built package (bin, dist/src, the addon; node_modules linked): the shared
 * tree's dist/ may be rebuilt by another build while 200+ plugin processes load it.
 */
function snapshotPackage(): string {
  const dir = tempDir(path.join(os.tmpdir(), 'icts-conc-pkg-'));
  for (const f of ['package.json', 'binding.gyp', 'bin', 'dist/src']) {
    fs.cpSync(path.join(PACKAGE_ROOT, f), path.join(dir, f), { recursive: true, filter: (src) => !src.endsWith('.map') });
  }
  // The addon may be mid-rebuild by another build: wait for it (node-gyp removes build/ first).
  const addonFile = path.join('build', 'Release', 'nftables_napi.node');
  const deadline = Date.now() + 60_000;
  while (!fs.existsSync(path.join(PACKAGE_ROOT, addonFile))) {
    if (Date.now() > deadline) throw new Error(`${addonFile} is missing: build the addon (npm run install)`);
    execFileSync('sleep', ['0.5']);
  }
  fs.mkdirSync(path.join(dir, 'build', 'Release'), { recursive: true });
  fs.copyFileSync(path.join(PACKAGE_ROOT, addonFile), path.join(dir, addonFile));
  fs.symlinkSync(path.join(PACKAGE_ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  return dir;
}

before(async () => {
  requireRootAndTools('ip', 'nft');
  api = await startApiStandIn();
  pkg = snapshotPackage();
  BIN = path.join(pkg, 'bin', 'istio-cni-ts.js');
});

after(async () => {
  if (pkg) fs.rmSync(pkg, { recursive: true, force: true });
  deleteNetns(netnsNames, 'ignore');
  await api?.close();
});

const prevResult = (netns: string, i: number) => prevResultIn(77, netns, i);

function cni(command: string, netns: string, pod: Pod, i: number): Promise<CniRun> {
  const conf = pluginConf(api.runDir, prevResult(netns, i), {
    plugin_log_level: 'info',
    ambient_enabled: false,
    native_nftables: true,
    pod_lookup_attempts: 3,
    pod_lookup_interval_ms: 50,
  });
  return runPlugin(podCniEnv(command, netns, pod.metadata as { name: string; namespace: string }), conf, BIN);
}

/** Processes whose command line runs the plugin binary. */
function pluginProcesses(): number[] {
  const out: number[] = [];
  for (const pid of fs.readdirSync('/proc').filter((d) => /^[0-9]+$/.test(d))) {
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmd.includes(BIN) && cmd.includes(process.execPath)) out.push(Number(pid));
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

const fdCount = () => fs.readdirSync('/proc/self/fd').length;

/** Mixed pods: default REDIRECT, TPROXY with inbound capture, and some with port/CIDR annotations. */
const podFor = (i: number) => mixedPod('conc', i);

async function pool<T>(n: number, items: T[], fn: (x: T) => Promise<void>): Promise<{ maxInFlight: number }> {
  let next = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  const worker = async () => {
    while (next < items.length) {
      const x = items[next++];
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      try {
        await fn(x);
      } finally {
        inFlight--;
      }
    }
  };
  await Promise.all(Array.from({ length: n }, worker));
  return { maxInFlight };
}

test(`${PODS} concurrent ADD (+ ADD again on every ${REPEAT_EVERY}th) / DEL on ${PODS} fresh netns with the standalone binary: exact tables, idempotent, nothing leaked`, async (t) => {
  const fdsBefore = fdCount();
  const runDirBefore = fs.readdirSync(api.runDir).sort();
  assert.deepEqual(pluginProcesses(), [], 'no plugin process before');

  const t0 = Date.now();
  netnsNames.push(...podNetns(TAG, PODS, api, podFor));
  const setupMs = Date.now() - t0;

  const pairs = newPairStats();
  let peakPlugins = 0;
  const sampler = setInterval(() => {
    peakPlugins = Math.max(peakPlugins, pluginProcesses().length);
  }, 50);
  const t1 = Date.now();
  let stats: { maxInFlight: number };
  try {
    stats = await pool(PARALLEL, [...Array(PODS).keys()], async (i) => {
      await addCheckDel({ cni, prevResult }, netnsNames[i], podFor(i), i, i % REPEAT_EVERY === 0, pairs);
    });
  } finally {
    clearInterval(sampler);
  }
  const wallMs = Date.now() - t1;
  const { addMs, delMs, repeated } = pairs;

  deleteNetns(netnsNames);

  // Nothing leaked.
  assert.deepEqual(pluginProcesses(), [], 'no plugin process left');
  assertNetnsGone(TAG);
  // The plugin's own log file is the one thing it may add to the run dir; no socket, nothing else.
  assert.deepEqual(
    fs
      .readdirSync(api.runDir)
      .filter((f) => f !== 'istio-cni.log')
      .sort(),
    runDirBefore,
    'nothing new in the run dir',
  );
  for (const f of fs.readdirSync(api.runDir)) assert.ok(fs.lstatSync(`${api.runDir}/${f}`).isFile(), `${f} is a plain file`);
  assert.ok(fdCount() <= fdsBefore + 2, `fds of this process: ${fdsBefore} before, ${fdCount()} after`);
  assert.equal(api.requestLines.filter((r) => r.startsWith('GET /api/v1/namespaces/load/pods/')).length, PODS + repeated, 'one pod GET per ADD');
  assert.ok(stats.maxInFlight === Math.min(PARALLEL, PODS), `${stats.maxInFlight} pairs in flight at once`);

  const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))];
  t.diagnostic(
    `${PODS} netns (setup ${setupMs} ms), ${PARALLEL} workers, ${PODS * 2 + repeated} plugin runs (${repeated} repeated ADDs) in ${wallMs} ms wall; ` +
      `peak plugin processes seen at once: ${peakPlugins}`,
  );
  t.diagnostic(
    `ADD p50 ${pct(addMs, 0.5)} ms, p95 ${pct(addMs, 0.95)} ms, max ${Math.max(...addMs)} ms; ` +
      `DEL p50 ${pct(delMs, 0.5)} ms, p95 ${pct(delMs, 0.95)} ms, max ${Math.max(...delMs)} ms`,
  );
});
