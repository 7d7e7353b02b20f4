// Apply latency: the native addon (libnftables on a pthread inside the netns) against the exec
// path (`nsenter --net=PATH nft -f -` as a child process), applying the same script into fresh
// namespaces, interleaved in one run. Needs root, iproute2, nftables and util-linux (nsenter).
// usage: node dist/bench/apply-latency.js [iterations per path, default 50]
import { applyNft, listRulesetJson } from '../src/netns/nft';
import { planReplace } from '../src/nft/plan';
import { render } from '../src/nft/transaction';
import { tproxyCapture } from './support/capture';
import { freshNetns, nftExec } from './support/netns';
import { quantile } from './support/stats';

const N = Number(process.argv[2] ?? 50);
const WARMUP = 3;

// A full TPROXY sidecar config (nat, mangle and raw tables, IPv4 and IPv6): 73 operations.
const tx = tproxyCapture({ outboundIPRangesExclude: '1.1.0.0/16', excludeInterfaces: 'not-istio-nic' });
const script = render(planReplace(tx, [], [])); // what the plan sends into a fresh netns

const fresh = () => freshNetns('bench');
const viaExec = (nsPath: string) => nftExec(nsPath, script);
const viaAddon = (nsPath: string) => applyNft(nsPath, script);

async function timeOnce(apply: (p: string) => Promise<void>): Promise<number> {
  const ns = fresh();
  try {
    const t0 = process.hrtime.bigint();
    await apply(ns.path);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    // Not timed: the tables really are there.
    const json = await listRulesetJson(ns.path);
    const tables = json.nftables.filter((i) => i.table).length;
    if (tables !== 3) throw new Error(`expected 3 tables after apply, found ${tables}`);
    return ms;
  } finally {
    ns.remove();
  }
}

/** Runs both paths N times (after a warm-up), alternating which goes first. */
async function interleaved(once: (apply: (p: string) => Promise<void>) => Promise<number>) {
  const addon: number[] = [];
  const exec: number[] = [];
  for (let i = 0; i < WARMUP + N; i++) {
    const addonFirst = i % 2 === 0; // so neither always runs on a warmer machine
    const a = addonFirst ? await once(viaAddon) : 0;
    const e = await once(viaExec);
    const a2 = addonFirst ? a : await once(viaAddon);
    if (i < WARMUP) continue;
    addon.push(a2);
    exec.push(e);
  }
  return { addon, exec };
}

function report(title: string, r: { addon: number[]; exec: number[] }): number {
  const fmt = (x: number) => x.toFixed(2).padStart(7);
  const row = (name: string, xs: number[]) =>
    `  ${name.padEnd(32)} median ${fmt(quantile(xs, 0.5))} ms   p10 ${fmt(quantile(xs, 0.1))}   p90 ${fmt(quantile(xs, 0.9))}`;
  const ratio = quantile(r.addon, 0.5) / quantile(r.exec, 0.5);
  console.log(title);
  console.log(row('addon (libnftables, pthread)', r.addon));
  console.log(row('exec (nsenter --net nft -f -)', r.exec));
  console.log(`  ratio addon/exec (medians): ${ratio.toFixed(3)}`);
  return ratio;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('apply-latency needs root (it creates network namespaces)');
  const lines = script.split('\n').length - 1;
  console.log(`script: ${tx.length} operations of a TPROXY sidecar capture (${lines} lines with the table replace); ${N} runs per path`);

  const first = await interleaved(timeOnce);
  const ratio = report('apply into a fresh netns (the target):', first);

  // Secondary figure: re-applying into one netns that already holds the tables, which leaves
  // out the kernel's first-use cost in a new netns that both paths pay above.
  const ns = fresh();
  try {
    const again = (apply: (p: string) => Promise<void>) => {
      const t0 = process.hrtime.bigint();
      return apply(ns.path).then(() => Number(process.hrtime.bigint() - t0) / 1e6);
    };
    report('re-apply into the same netns:', await interleaved(again));
  } finally {
    ns.remove();
  }
  console.log(`target (addon at most half the exec time, fresh netns): ${ratio <= 0.5 ? 'met' : 'NOT met'} (${ratio.toFixed(3)})`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
