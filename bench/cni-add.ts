// CNI ADD and DEL of a sidecar pod as a node runs them (issue 12; ARCHITECTURE.md principle 9).
// The real agent process is started as the DaemonSet starts it (bench/support/node-agent.ts: env
// only, pod cache on, the payload installed by the agent itself into CNI_BIN_DIR) against the
// e2e API stand-in over TLS, and the INSTALLED binary is exec'd as a runtime written in Go execs
// it (posix_spawn, bench/burst-launcher.c: CNI_* env, the config the agent chained into the
// conflist on stdin). Every ADD gets a fresh netns made right after the previous one was deleted.
// Every run is checked (exit code, stdout, the tables in the netns). In one run, interleaved:
//   shim -> agent ADD        the installed shim, answered by the agent (pod from its watch)
//   shim -> agent DEL        of a pod ADDed just before (untimed)
//   standalone ADD           the installed shim with the agent down: no socket in its run dir,
//                            so it execs the self-contained plugin, which GETs the pod
//   go loopback ADD          Debian's compiled Go `loopback` plugin (the floor of a plugin exec)
//   nsenter --net nft -f     the rules Istio's plugin sends for this pod (the golden text,
//                            `rules --dry-run --pod`), applied by the nft CLI in the netns
//   node -e 0                the start-up of the Node the standalone plugin is built from
// Then, in rounds: a burst of BURST concurrent ADDs through the shim (and of Go loopback ADDs);
// CONC concurrent re-ADDs through the shim onto pods that already have their rules, and CONC
// concurrent DELs, against CONC concurrent `nft -f` re-applies of the golden text (the waits of
// a re-apply must be shared, not queued).
// Needs root, iproute2, nftables, util-linux (nsenter), gcc, openssl, containernetworking-plugins,
// and the payload (`npm run package`; `npm run bench:cni` builds it).
//
// usage: node dist/bench/cni-add.js [runs=30] [burst=50] [--concurrent=16] [--rounds=3] [--agent-root=DIR]
//   --agent-root: the agent of another built checkout (an A/B of two commits, run after run)
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Exec, Launcher, LaunchSpec } from './support/launch';
import { BenchNetns, freshNetns, nftTables } from './support/netns';
import { startDeployedAgent } from './support/node-agent';
import { BIN, GO_LOOPBACK, payloadNode } from './support/paths';
import { load, machine, median, ms, p90, ratio } from './support/stats';
import { KubeApiStandIn, injectedPod, makePki } from './support/testbed';

const args = process.argv.slice(2);
const positional = args.filter((a) => !a.startsWith('--'));
const opt = (name: string, def: number) => {
  const a = args.find((x) => x.startsWith(`--${name}=`));
  const v = a === undefined ? def : Number(a.slice(name.length + 3));
  if (!Number.isInteger(v) || v < 1) fail(`--${name}: expected a positive integer, got ${a}`);
  return v;
};
const N = Number(positional[0] ?? 30);
const BURST = Number(positional[1] ?? 50);
const CONC = opt('concurrent', 16);
const ROUNDS = opt('rounds', 3);
const WARMUP = 3;
const NODE = 'bench-node';
const POD = { name: 'web-1', namespace: 'shop' };
const AGENT_ROOT = args.find((a) => a.startsWith('--agent-root='))?.slice('--agent-root='.length);
for (const a of args) if (a.startsWith('--') && !/^--(concurrent|rounds|agent-root)=/.test(a)) fail(`unknown option ${a}`);

function fail(msg: string): never {
  process.stderr.write(`bench/cni-add: ${msg}\n`);
  process.exit(1);
}

function have(tool: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) fail('needs root (network namespaces, the agent)');
  for (const t of ['ip', 'nft', 'nsenter', 'openssl', 'gcc']) if (!have(t)) fail(`needs ${t} on PATH`);
  if (!fs.existsSync(GO_LOOPBACK)) fail(`${GO_LOOPBACK} is missing: apt-get install containernetworking-plugins`);
  const loadAtStart = load();

  // The API stand-in (TLS, token) holds the pod, bound to this node; the agent's watch lists it.
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'icts-bench-cni-'));
  const api = Object.assign(new KubeApiStandIn(makePki()), { token: `bench-token-${process.pid}` });
  await api.start();
  const spec = injectedPod(POD);
  api.addPod(spec.pod, NODE);
  const dirs = { net: path.join(root, 'net.d'), bin: path.join(root, 'bin'), run: path.join(root, 'run'), sa: path.join(root, 'sa') };
  for (const d of [dirs.net, dirs.bin]) fs.mkdirSync(d, { recursive: true });
  api.writeServiceAccount(dirs.sa);
  // The node's primary network, which the agent chains into.
  fs.writeFileSync(
    path.join(dirs.net, '10-bench.conflist'),
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'k8s-pod-network',
      plugins: [
        { type: 'bridge', bridge: 'cni0', ipam: { type: 'host-local', subnet: '10.22.0.0/16' } },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    }),
  );
  const launcher = new Launcher();
  const cleanup = async () => {
    await agent?.stop();
    await api.close();
    launcher.close();
    fs.rmSync(root, { recursive: true, force: true });
  };
  let agent: Awaited<ReturnType<typeof startDeployedAgent>> | undefined;
  try {
    agent = await startDeployedAgent({ node: NODE, apiPort: api.port, dirs, agentRoot: AGENT_ROOT });
  } catch (e) {
    await cleanup();
    throw e;
  }

  try {
    const prevResult = { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: '/run/netns/pod' }], ips: [{ address: '10.22.0.5/16', interface: 0 }] };
    const conf = JSON.stringify(agent.pluginConf(prevResult));
    // The agent down: a run dir with the kubeconfig the agent wrote and no socket.
    const downDir = path.join(root, 'run-agent-down');
    fs.mkdirSync(downDir, { mode: 0o750 });
    fs.copyFileSync(path.join(dirs.run, 'istio-cni-kubeconfig'), path.join(downDir, 'istio-cni-kubeconfig'));
    const confDown = JSON.stringify({ ...JSON.parse(conf), cni_agent_run_dir: downDir });
    const want = `${JSON.stringify(prevResult)}\n`;
    const cniEnv = (command: string, ifName = 'eth0', namespace = POD.namespace) => ({
      PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
      CNI_COMMAND: command,
      CNI_CONTAINERID: 'c0ffee',
      CNI_IFNAME: ifName,
      CNI_PATH: dirs.bin,
      CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${namespace};K8S_POD_NAME=${POD.name};K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=${spec.uid}`,
    });

    // What Istio's plugin sends for this pod: the golden text.
    const podFile = path.join(root, 'pod.json');
    fs.writeFileSync(podFile, JSON.stringify(spec.pod));
    const golden = execFileSync(process.execPath, [BIN, 'rules', '--dry-run', '--pod', podFile], {
      encoding: 'utf8',
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    });
    const goldenFile = path.join(root, 'golden.nft');
    fs.writeFileSync(goldenFile, golden);

    const node = payloadNode();
    const NODE0 = `node -e 0 (${node.version}, the payload's Node)`;
    const L = {
      add: { program: agent.shim, env: cniEnv('ADD'), stdin: conf },
      del: { program: agent.shim, env: cniEnv('DEL'), stdin: conf },
      addDown: { program: agent.shim, env: cniEnv('ADD'), stdin: confDown },
      // A pod in an excluded namespace (the chart's EXCLUDE_NAMESPACES): answered before any
      // lookup or netns work, so this is the round trip itself (exec, socket, agent, exit).
      addExcluded: { program: agent.shim, env: cniEnv('ADD', 'eth0', 'kube-system'), stdin: conf },
      loopback: {
        program: GO_LOOPBACK,
        env: { ...cniEnv('ADD', 'lo'), CNI_PATH: path.dirname(GO_LOOPBACK) },
        stdin: '{"cniVersion":"1.0.0","name":"lo","type":"loopback"}',
      },
      nft: { program: 'nsenter', args: ['--net=@NETNS@', 'nft', '-f', goldenFile], env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }, stdin: '' },
      node0: { program: node.bin, args: ['-e', '0'], env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }, stdin: '' },
    } satisfies Record<string, LaunchSpec>;

    const hasRules = (ns: BenchNetns) => nftTables(ns).some((t) => t.includes('istio-proxy-nat'));
    const checkAdd = (label: string) => (r: Exec, ns: BenchNetns) => {
      if (r.code !== 0 || r.stdout !== want) throw new Error(`${label}: exit ${r.code}, stdout ${JSON.stringify(r.stdout)}, stderr ${r.stderr}`);
      if (!hasRules(ns)) throw new Error(`${label}: no istio tables in the netns`);
    };
    const checkDel = (r: Exec, ns: BenchNetns) => {
      if (r.code !== 0) throw new Error(`DEL: exit ${r.code}: ${r.stdout}${r.stderr}`);
      if (nftTables(ns).length) throw new Error(`DEL: tables left: ${nftTables(ns).join(', ')}`);
    };
    const checkOk = (label: string, out?: string) => (r: Exec, ns?: BenchNetns) => {
      if (r.code !== 0 || (out && !r.stdout.includes(out))) throw new Error(`${label}: exit ${r.code}: ${r.stdout}${r.stderr}`);
      if (label.startsWith('nsenter') && ns && !hasRules(ns)) throw new Error(`${label}: no rules`);
    };
    const once = async (s: LaunchSpec, ns: BenchNetns): Promise<[number, Exec]> => {
      const r = await launcher.run(s, [ns.path]);
      return [r.wallMs, r.runs[0]];
    };

    type Case = { name: string; run: (ns: BenchNetns) => Promise<number> };
    const cases: Case[] = [
      {
        name: 'shim -> agent ADD',
        run: async (ns) => {
          const [t, r] = await once(L.add, ns);
          checkAdd('shim ADD')(r, ns);
          return t;
        },
      },
      {
        name: 'shim -> agent DEL',
        run: async (ns) => {
          checkAdd('ADD before DEL')((await once(L.add, ns))[1], ns);
          const [t, r] = await once(L.del, ns);
          checkDel(r, ns);
          return t;
        },
      },
      {
        name: 'shim -> agent ADD, pod passed through (explains: the round trip alone)',
        run: async (ns) => {
          const [t, r] = await once(L.addExcluded, ns);
          if (r.code !== 0 || r.stdout !== want) throw new Error(`excluded ADD: exit ${r.code}, stdout ${JSON.stringify(r.stdout)}, stderr ${r.stderr}`);
          if (nftTables(ns).length) throw new Error(`excluded ADD: tables written: ${nftTables(ns).join(', ')}`);
          return t;
        },
      },
      {
        name: 'standalone ADD (agent down)',
        run: async (ns) => {
          const [t, r] = await once(L.addDown, ns);
          checkAdd('standalone ADD')(r, ns);
          return t;
        },
      },
      {
        name: 'go loopback ADD',
        run: async (ns) => {
          const [t, r] = await once(L.loopback, ns);
          checkOk('loopback', '127.0.0.1/8')(r);
          return t;
        },
      },
      {
        name: 'nsenter --net nft -f (golden text)',
        run: async (ns) => {
          const [t, r] = await once(L.nft, ns);
          checkOk('nsenter nft')(r, ns);
          return t;
        },
      },
      {
        name: NODE0,
        run: async (ns) => {
          const [t, r] = await once(L.node0, ns);
          checkOk('node -e 0')(r);
          return t;
        },
      },
    ];
    const times = new Map(cases.map((c) => [c.name, [] as number[]]));
    process.stderr.write(`bench/cni-add: agent ${agent.pid} up; ${N} interleaved runs of each (+${WARMUP} warm-up), load ${load()}\n`);
    for (let i = 0; i < WARMUP + N; i++) {
      for (let k = 0; k < cases.length; k++) {
        const c = cases[(k + i) % cases.length]; // rotate: no case always first or after the same one
        const ns = freshNetns('cnib');
        try {
          const t = await c.run(ns);
          if (i >= WARMUP) times.get(c.name)!.push(t);
        } finally {
          ns.remove();
        }
      }
    }
    const loadAfterSingles = load();

    // Bursts and concurrent re-applies, in rounds.
    const many = async (n: number, fn: (nss: BenchNetns[]) => Promise<number>) => {
      const nss = Array.from({ length: n }, () => freshNetns('cnib'));
      try {
        return await fn(nss);
      } finally {
        for (const ns of nss) ns.remove();
      }
    };
    const checkAll = (r: { runs: Exec[] }, nss: BenchNetns[], check: (r: Exec, ns: BenchNetns) => void) => r.runs.forEach((x, i) => check(x, nss[i]));
    const R: Record<string, number[]> = { burstShim: [], burstLoop: [], reAddShim: [], delShim: [], reNft: [], reAddOne: [], reNftOne: [] };
    const roundLoads: string[] = [];
    const rssMb = () => Number(/^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${agent.pid}/status`, 'utf8'))?.[1]) / 1024;
    const rssBefore = rssMb();
    for (let r = 0; r < ROUNDS; r++) {
      R.burstShim.push(
        await many(BURST, async (nss) => {
          const b = await launcher.run(
            L.add,
            nss.map((n) => n.path),
          );
          checkAll(b, nss, checkAdd('burst ADD'));
          return b.wallMs;
        }),
      );
      R.burstLoop.push(
        await many(BURST, async (nss) => {
          const b = await launcher.run(
            L.loopback,
            nss.map((n) => n.path),
          );
          checkAll(b, nss, checkOk('loopback burst', '127.0.0.1/8'));
          return b.wallMs;
        }),
      );
      // Pods whose rules are in: CONC concurrent re-ADDs, then CONC concurrent DELs, through the agent.
      await many(CONC, async (nss) => {
        checkAll(
          await launcher.run(
            L.add,
            nss.map((n) => n.path),
          ),
          nss,
          checkAdd('ADD before re-ADD'),
        );
        const one = await launcher.run(L.add, [nss[0].path]);
        checkAdd('single re-ADD')(one.runs[0], nss[0]);
        R.reAddOne.push(one.wallMs);
        const re = await launcher.run(
          L.add,
          nss.map((n) => n.path),
        );
        checkAll(re, nss, checkAdd('concurrent re-ADD'));
        R.reAddShim.push(re.wallMs);
        const del = await launcher.run(
          L.del,
          nss.map((n) => n.path),
        );
        checkAll(del, nss, checkDel);
        R.delShim.push(del.wallMs);
        return 0;
      });
      // The same with the nft CLI: netns holding the golden rules, re-applied (Istio's flush form).
      await many(CONC, async (nss) => {
        checkAll(
          await launcher.run(
            L.nft,
            nss.map((n) => n.path),
          ),
          nss,
          checkOk('nsenter nft'),
        );
        const one = await launcher.run(L.nft, [nss[0].path]);
        checkOk('nsenter nft')(one.runs[0], nss[0]);
        R.reNftOne.push(one.wallMs);
        const re = await launcher.run(
          L.nft,
          nss.map((n) => n.path),
        );
        checkAll(re, nss, checkOk('nsenter nft'));
        R.reNft.push(re.wallMs);
        return 0;
      });
      roundLoads.push(load());
    }

    const rssAfter = rssMb();
    // The agent served every ADD itself (none fell back to the standalone plugin).
    const lookups = api.requestsFor(POD.namespace, POD.name).length;

    const med = (n: string) => median(times.get(n)!);
    const lo = med('go loopback ADD');
    const rows = cases.map((c) => {
      const xs = times.get(c.name)!;
      return `| ${c.name} | ${ms(median(xs))} | ${ms(p90(xs))} | ${ratio(median(xs) / lo)} | ${ratio(p90(xs) / p90(times.get('go loopback ADD')!))} |`;
    });
    const shimAdd = med('shim -> agent ADD');
    const shimP90 = p90(times.get('shim -> agent ADD')!);
    const loP90 = p90(times.get('go loopback ADD')!);
    const list = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(', ');
    const standalone = med('standalone ADD (agent down)');
    const out = [
      `CNI ADD/DEL of a sidecar pod through the agent as deployed (${N} interleaved runs each, ${WARMUP} warm-up; every exec by posix_spawn)`,
      `machine: ${machine()}; load at start ${loadAtStart}, after the single runs ${loadAfterSingles}, after each round ${roundLoads.join(' | ')}`,
      `agent: ${agent.argv.slice(1).join(' ')}${agent.note ? ` (${agent.note})` : ''}`,
      '',
      '| case | median | p90 | median / go loopback | p90 / go loopback p90 |',
      '|---|---|---|---|---|',
      ...rows,
      '',
      `Targets: shim -> agent ADD median <= 1.0x go loopback: ${ratio(shimAdd / lo)} (${shimAdd <= lo ? 'met' : 'NOT met'}); ` +
        `p90 <= 1.3x: ${ratio(shimP90 / loP90)} (${shimP90 <= 1.3 * loP90 ? 'met' : 'NOT met'}); standalone ADD / ${NODE0}: ${ratio(standalone / med(NODE0))}`,
      '',
      `Burst of ${BURST} concurrent ADDs (${ROUNDS} rounds, wall ms from the first spawn to the last exit): shim -> agent ${list(R.burstShim)} ` +
        `(median ${median(R.burstShim).toFixed(0)} = ${ratio(median(R.burstShim) / shimAdd)} one shim ADD, ${ratio(median(R.burstShim) / standalone)} one standalone ADD; ` +
        `target < 2x one ADD: ${median(R.burstShim) < 2 * shimAdd ? 'met' : 'NOT met'}); go loopback ${list(R.burstLoop)} (median ${ratio(median(R.burstLoop) / lo)} one loopback ADD)`,
      '',
      `Re-apply onto pods whose rules are in (${ROUNDS} rounds, wall ms), one alone and ${CONC} at once:`,
      `  re-ADD through the agent: one [${list(R.reAddOne)}]; ${CONC} at once [${list(R.reAddShim)}] (median ${ratio(median(R.reAddShim) / median(R.reAddOne))} one)`,
      `  DEL through the agent, ${CONC} at once: [${list(R.delShim)}]`,
      `  nsenter nft -f of Istio's text: one [${list(R.reNftOne)}]; ${CONC} at once [${list(R.reNft)}] (median ${ratio(median(R.reNft) / median(R.reNftOne))} one)`,
      `  ${CONC} re-ADDs through the agent / ${CONC} nft -f: ${ratio(median(R.reAddShim) / median(R.reNft))}`,
      '',
      `Agent RSS before the rounds ${rssBefore.toFixed(1)} MB, after ${rssAfter.toFixed(1)} MB`,
      `Pod GETs the API stand-in served: ${lookups}, for ${N + WARMUP} standalone ADDs (each GETs its pod; the agent answers from its watch)`,
    ];
    const raw = `/tmp/icts-bench-cni-add-${process.pid}.json`;
    fs.writeFileSync(raw, JSON.stringify({ singles: Object.fromEntries(times), rounds: R }));
    out.push(`Every sample: ${raw}`);
    process.stdout.write(`${out.join('\n')}\n`);
  } finally {
    await cleanup();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`bench/cni-add: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);
