// What our plugin adds to a whole pod start (issue 12): RunPodSandbox through a private containerd
// (the e2e node: bench/support/testbed.ts) with the node's chain bridge → portmap, with and
// without our plugin appended, the agent running as the DaemonSet runs it (it installs the
// payload and chains our entry itself), interleaved in one run. containerd has two runtime
// handlers on the same runc: the default one reads the conflist the agent chains into, `plain`
// reads a copy of the primary conflist alone (containerd's per-runtime `cni_conf_dir`), so a
// pod with and a pod without our plugin alternate on the same containerd, bridge and IPAM.
// Every pod is checked (SANDBOX_READY; its netns holds our tables exactly when it should) and
// stopped and removed (untimed) before the next one. containerd's own log gives the time of its
// CNI ADD over the whole chain. Takes the e2e lock (/tmp/icts-e2e.lock) while containerd runs.
// Needs what the containerd e2e tests need (scripts/install-system-deps.sh) and the payload
// (`npm run package`).
//
// usage: node dist/bench/pod-start.js [pairs=30]
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDeployedAgent } from './support/node-agent';
import { load, machine, median, ms, p90 } from './support/stats';
import { E2eWorld, PLUGIN_TYPE, RunningPod, injectedPod, requirePrerequisites, sweepStaleRuns } from './support/testbed';

const PAIRS = Number(process.argv[2] ?? 30);
const WARMUP = 2;
const NODE = 'bench-node';
const PLAIN = 'plain';
const E2E_LOCK = '/tmp/icts-e2e.lock';

/** Holds the e2e lock until this process exits (flock(1) on a descriptor this process keeps open). */
function takeE2eLock(): void {
  const fd = fs.openSync(E2E_LOCK, 'a');
  process.stderr.write(`bench/pod-start: waiting for ${E2E_LOCK}\n`);
  const r = spawnSync('flock', ['-x', '3'], { stdio: ['ignore', 'inherit', 'inherit', fd] });
  if (r.status !== 0) throw new Error(`flock ${E2E_LOCK} failed (exit ${r.status})`);
}

async function main(): Promise<number> {
  const refPlugins = requirePrerequisites();
  takeE2eLock();
  const swept = sweepStaleRuns();
  if (swept.length) process.stderr.write(`bench/pod-start: cleaned up after killed e2e runs: ${swept.join(', ')}\n`);
  const loadAtStart = load();
  const plainDir = `/tmp/icts-e2e-${process.pid}/cni/net.d-${PLAIN}`;
  const world = new E2eWorld(refPlugins, [{ name: PLAIN, cniConfDir: plainDir }]);
  world.cleanUpOnExit();
  fs.mkdirSync(plainDir, { recursive: true });
  fs.writeFileSync(path.join(plainDir, '10-e2e.conflist'), world.primaryConflist());
  await world.setup({ installPlugin: false });
  const agent = await startDeployedAgent({
    node: NODE,
    apiPort: world.api.port,
    dirs: { net: world.cniConfDir, bin: world.cniBinDir, run: world.agentRunDir, sa: world.saDir },
  });
  world.daemons.push(agent.proc); // killed by the harness's emergency clean-up too
  const problems: string[] = [];
  try {
    // containerd reloads the chained conflist by itself.
    for (let i = 0; ; i++) {
      const cni = JSON.parse((await world.cri.statusInfo()).cniconfig ?? '{}') as {
        Networks?: { IFName: string; Config: { Plugins: { Network: { type: string } }[] } }[];
      };
      const types = cni.Networks?.find((n) => n.IFName === 'eth0')?.Config.Plugins.map((p) => p.Network.type) ?? [];
      if (types.join() === `bridge,portmap,${PLUGIN_TYPE}`) break;
      if (i > 200) throw new Error(`containerd did not load the chained conflist: ${types.join()}`);
      await sleep(50);
    }
    const tables = (pod: RunningPod) => execFileSync('nsenter', [`--net=${pod.nsPath}`, 'nft', 'list', 'tables'], { encoding: 'utf8' });
    const times = { with: [] as number[], without: [] as number[] };
    const cni = { with: [] as string[], without: [] as string[] };
    const stopMs = { with: [] as number[], without: [] as number[] };
    const diffs: number[] = [];
    process.stderr.write(`bench/pod-start: agent ${agent.pid} up; ${PAIRS} pairs (+${WARMUP} warm-up), load ${load()}\n`);
    for (let i = 0; i < WARMUP + PAIRS; i++) {
      const pair: Record<string, number> = {};
      // Alternate which of the pair goes first.
      for (const kind of (i % 2 ? ['without', 'with'] : ['with', 'without']) as ('with' | 'without')[]) {
        const spec = injectedPod({ name: `web-${i}-${kind}`, namespace: 'bench' });
        world.api.addPod(spec.pod, NODE);
        const pod = await world.runPod(spec, kind === 'with' ? undefined : PLAIN);
        try {
          const st = await world.status(pod.id);
          if (st.state !== 'SANDBOX_READY') throw new Error(`${spec.name}: ${st.state}`);
          const has = tables(pod).includes('istio-proxy-nat');
          if (has !== (kind === 'with')) throw new Error(`${spec.name}: our tables ${has ? 'present' : 'missing'} in the pod netns`);
          const t0 = performance.now();
          await world.cri.stopPodSandbox(pod.id);
          const tStop = performance.now() - t0;
          await world.cri.removePodSandbox(pod.id);
          if (i >= WARMUP) {
            times[kind].push(pod.runMs);
            cni[kind].push(pod.id);
            stopMs[kind].push(tStop);
            pair[kind] = pod.runMs;
          }
        } finally {
          world.release(pod);
          world.pods.splice(world.pods.indexOf(pod), 1);
        }
      }
      if (i >= WARMUP) diffs.push(pair.with - pair.without);
    }
    // The agent served every ADD of a chained pod (no fall-back to the standalone plugin).
    const served = agent.out.filter((l) => l.includes('ADD: sidecar capture applied') && /bench\/web-\d+-with/.test(l)).length;
    const setup = world.cniAddMsBySandbox();
    const cniMs = (ids: string[]) => ids.map((id) => setup.get(id)).filter((x): x is number => x !== undefined);
    const mW = median(times.with);
    const mWo = median(times.without);
    const added = mW - mWo;
    const gets = world.api.requests.filter((r) => r.path.startsWith('/api/v1/namespaces/bench/pods/')).length;
    const out = [
      `RunPodSandbox through a private containerd (${(await world.cri.version()).runtime_version}), bridge → portmap with and without our plugin appended, agent as deployed; ${PAIRS} interleaved pairs`,
      `machine: ${machine()}; load at start ${loadAtStart}, at the end ${load()}`,
      `agent: ${agent.argv.slice(1).join(' ')}${agent.note ? ` (${agent.note})` : ''}`,
      '',
      '| pod start | RunPodSandbox median | p90 | containerd CNI ADD (whole chain) median | p90 | StopPodSandbox median |',
      '|---|---|---|---|---|---|',
      `| bridge → portmap | ${ms(mWo)} | ${ms(p90(times.without))} | ${ms(median(cniMs(cni.without)))} | ${ms(p90(cniMs(cni.without)))} | ${ms(median(stopMs.without))} |`,
      `| bridge → portmap → istio-cni (shim → agent) | ${ms(mW)} | ${ms(p90(times.with))} | ${ms(median(cniMs(cni.with)))} | ${ms(p90(cniMs(cni.with)))} | ${ms(median(stopMs.with))} |`,
      '',
      `Added by our plugin: ${ms(added)} on the median RunPodSandbox = ${((added / mWo) * 100).toFixed(1)}% (target <= 3%: ${added <= 0.03 * mWo ? 'met' : 'NOT met'}); ` +
        `median of the ${PAIRS} paired differences ${ms(median(diffs))} (${((median(diffs) / mWo) * 100).toFixed(1)}%); ` +
        `on containerd's CNI ADD ${ms(median(cniMs(cni.with)) - median(cniMs(cni.without)))}`,
      `ADDs the agent logged as served: ${served} of ${WARMUP + PAIRS}; pod GETs the API served (0 when the agent's watch answered every lookup): ${gets}`,
    ];
    const raw = `/tmp/icts-bench-pod-start-${process.pid}.json`;
    fs.writeFileSync(
      raw,
      JSON.stringify({ runPodSandboxMs: times, cniAddMs: { with: cniMs(cni.with), without: cniMs(cni.without) }, stopMs, pairedDiffMs: diffs }),
    );
    out.push(`Every sample: ${raw}`);
    process.stdout.write(`${out.join('\n')}\n`);
  } finally {
    await agent.stop();
    problems.push(...(await world.teardown()));
  }
  for (const p of problems) process.stderr.write(`bench/pod-start: teardown: ${p}\n`);
  return problems.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`bench/pod-start: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);
