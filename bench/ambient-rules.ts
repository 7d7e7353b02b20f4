// Per-pod cost of the ambient in-pod setup, by step: building the transaction (pure), applying it
// with the addon, the same script through `nsenter --net nft -f -` (the exec baseline), and the
// ip rule + local route over netlink. Fresh namespaces, the two apply paths interleaved.
// Needs root, iproute2, nftables and util-linux (nsenter).
// usage: node dist/bench/ambient-rules.js [pods, default 50]
import { buildInpodRules } from '../src/ambient/build';
import { parseAmbientConfig, parsePodOverrides } from '../src/ambient/config';
import { POD_TABLES } from '../src/ambient/tables';
import { configureAmbientRoutesIn } from '../src/netns/ambient-routes';
import { ambientRoutePlan } from '../src/netns/route-plan';
import { applyNft } from '../src/netns/nft';
import { planReplace } from '../src/nft/plan';
import { render } from '../src/nft/transaction';
import { freshNetns, nftExec } from './support/netns';

const N = Number(process.argv[2] ?? 50);
const cfg = parseAmbientConfig({ enableIPv6: true, redirectDNS: true });
const pod = parsePodOverrides({});
const replace = POD_TABLES.map((t) => ({ family: t.family, table: t.name }));

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p90 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.9)];

async function main(): Promise<void> {
  const build: number[] = [];
  const addon: number[] = [];
  const exec: number[] = [];
  const routes: number[] = [];
  let ops = 0;
  for (let i = 0; i < N + 3; i++) {
    let t0 = process.hrtime.bigint();
    const tx = buildInpodRules(cfg, pod);
    const tBuild = ms(t0);
    ops = tx.length;
    const script = render(planReplace(tx, replace, [])); // what the plan sends into a fresh netns
    const a = freshNetns('abench', { loUp: true });
    const b = freshNetns('abench', { loUp: true });
    try {
      t0 = process.hrtime.bigint();
      await applyNft(a.path, script);
      const tAddon = ms(t0);
      t0 = process.hrtime.bigint();
      await nftExec(b.path, script);
      const tExec = ms(t0);
      t0 = process.hrtime.bigint();
      await configureAmbientRoutesIn(a.path, ambientRoutePlan(true));
      const tRoutes = ms(t0);
      if (i >= 3) {
        build.push(tBuild);
        addon.push(tAddon);
        exec.push(tExec);
        routes.push(tRoutes);
      }
    } finally {
      a.remove();
      b.remove();
    }
  }
  const row = (name: string, xs: number[]) => `${name.padEnd(34)} median ${median(xs).toFixed(3)} ms   p90 ${p90(xs).toFixed(3)} ms`;
  console.log(`ambient in-pod setup, IPv4+IPv6 with DNS (${ops} operations), ${N} pods`);
  console.log(row('build transaction', build));
  console.log(row('apply: addon (libnftables)', addon));
  console.log(row('apply: exec nsenter nft -f -', exec));
  console.log(row('ip rules + local routes (netlink)', routes));
  console.log(`addon vs exec (median): ${(median(exec) / median(addon)).toFixed(1)}x`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
