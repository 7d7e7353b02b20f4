// What a caller of nftRun waits for when a transaction deletes existing nf_tables objects: the
// kernel makes the closing of such a netlink socket wait for an RCU grace period. Measures a
// re-apply (`add table; delete table` for each table, then the rules) onto existing tables, one
// at a time with a pause between (so no earlier close is still under way), and 16 at once into
// 16 namespaces. Needs root and iproute2. Point ISTIO_CNI_TS_ADDON at another build to compare.
// usage: node dist/bench/nft-reapply.js [runs, default 30] [rounds of 16, default 10]
import { render, tablesOf } from '../src/nft/transaction';
import { applyNft } from '../src/netns/nft';
import { tproxyCapture } from './support/capture';
import { BenchNetns, freshNetns, nftTables } from './support/netns';
import { load, machine, median, ms, p90 } from './support/stats';

const RUNS = Number(process.argv[2] ?? 30);
const ROUNDS = Number(process.argv[3] ?? 10);
const WIDTH = 16;

// A full TPROXY sidecar config: nat, mangle and raw tables, IPv4 and IPv6.
const tx = tproxyCapture();
const reapply =
  tablesOf(tx)
    .map((t) => `add table ${t.family} ${t.table}\ndelete table ${t.family} ${t.table}\n`)
    .join('') + render(tx);

const pause = () => new Promise((r) => setTimeout(r, 50));

async function timed(f: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await f();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

async function main(): Promise<void> {
  const pool: BenchNetns[] = Array.from({ length: WIDTH }, () => freshNetns('reapply'));
  try {
    await Promise.all(pool.map((ns) => applyNft(ns.path, reapply)));
    const one: number[] = [];
    for (let i = 0; i < RUNS + 3; i++) {
      await pause();
      const t = await timed(() => applyNft(pool[0].path, reapply));
      if (i >= 3) one.push(t);
    }
    const wide: number[] = [];
    for (let i = 0; i < ROUNDS + 1; i++) {
      await pause();
      const t = await timed(() => Promise.all(pool.map((ns) => applyNft(ns.path, reapply))));
      if (i >= 1) wide.push(t);
    }
    await pause();
    for (const ns of pool) {
      const tables = nftTables(ns).length;
      if (tables !== tablesOf(tx).length) throw new Error(`${ns.name}: ${tables} tables after the re-applies`);
    }
    console.log(`${machine()}; load ${load()}; addon ${process.env.ISTIO_CNI_TS_ADDON ?? '(built)'}`);
    console.log(`re-apply, one at a time (${RUNS}): median ${ms(median(one))}, p90 ${ms(p90(one))}`);
    console.log(`${WIDTH} concurrent re-applies into ${WIDTH} netns (${ROUNDS} rounds): median ${ms(median(wide))}, p90 ${ms(p90(wide))}`);
  } finally {
    for (const ns of pool) ns.remove();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
