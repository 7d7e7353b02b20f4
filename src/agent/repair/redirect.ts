// The repair action proper: program the pod's sidecar capture rules in its (already running)
// network namespace, exactly as the CNI plugin's ADD would have: same pod -> Redirect ->
// CaptureConfig path, same nft transaction, same TPROXY routes. Always nftables (this project
// has no iptables backend; NATIVE_NFTABLES does not change anything here).
import { CaptureApplyError, applySidecarCapture } from '../../capture/apply';
import { Pod } from '../../kube/pod';
import { formatIp } from '../../net/ip';
import { Transaction, tablesOf } from '../../nft/transaction';
import { sidecarSkipReason, SKIP_EXPLANATION } from '../../plugin/decide';
import { PodNetns, RuleApplier } from '../../plugin/ports';
import { planSidecar } from '../../plugin/istio';
import { extractPodInfo } from '../../redirect';
import { FoundNetns, NetnsProbe, findPodNetns } from './netns';

export type RepairOutcome =
  | { readonly outcome: 'repaired'; readonly netns: string; readonly via: FoundNetns['via']; readonly tables: string[] }
  | { readonly outcome: 'skipped'; readonly reason: string };

export interface PodRepairer {
  /** Rejects when the pod's netns cannot be found or the rules cannot be applied. */
  repair(pod: Pod): Promise<RepairOutcome>;
}

export interface NetnsRepairerDeps {
  procRoot: string;
  probe: NetnsProbe;
  netns: PodNetns;
  rules: RuleApplier;
  /** The environment capture settings are read from (upstream: the agent's own). */
  env: Readonly<Record<string, string | undefined>>;
  debug?: (msg: string) => void;
}

export function netnsRepairer(d: NetnsRepairerDeps): PodRepairer {
  return {
    async repair(pod) {
      const pi = extractPodInfo(pod);
      // The plugin would not have captured this pod: programming it now would go against the
      // decision ADD makes, so leave it (upstream does not check; see docs/installer.md).
      const skip = sidecarSkipReason(pi);
      if (skip) return { outcome: 'skipped', reason: SKIP_EXPLANATION[skip] };
      const found = await findPodNetns(pod, { procRoot: d.procRoot, probe: d.probe, debug: d.debug });
      // Opened once: the dual-stack check and both rules and routes reach the same netns.
      const ns = await d.netns.open(found.path);
      if (ns.state !== 'ok') throw new Error(`cannot use the netns of pod ${pi.namespace}/${pi.name} at ${found.path}: ${ns.state}`);
      let tx: Transaction;
      try {
        const enableIPv6 = await d.netns.isDualStack(ns.netns);
        const plan = planSidecar(pi, { netnsPath: found.path, enableIPv6, env: d.env });
        if (!plan.capture) return { outcome: 'skipped', reason: plan.reason };
        // As on ADD: rules, then routes; the rules go again if the routes fail.
        tx = await applySidecarCapture(d.rules, ns.netns, plan.config);
      } catch (e) {
        throw e instanceof CaptureApplyError ? e.error : e;
      } finally {
        ns.netns.release();
      }
      return { outcome: 'repaired', netns: found.path, via: found.via, tables: tablesOf(tx).map((t) => t.table) };
    },
  };
}

/** Interface addresses through rtnetlink inside the netns (IFA_LOCAL, else IFA_ADDRESS, as Go reads them). */
export const rtnlProbe = (): NetnsProbe => ({
  async addressesIn(nsPath) {
    // Loaded on first use: the netlink binding and the addon are only needed in repair mode.
    const { withRtnl } = await import('../../netns/rtnl');
    return withRtnl(nsPath, async (rt) => {
      const out: string[] = [];
      for (const a of await rt.getAddresses()) {
        const b = a.attrs.local ?? a.attrs.address;
        if (!b || (b.length !== 4 && b.length !== 16)) continue;
        out.push(formatIp({ family: b.length === 4 ? 4 : 6, bytes: new Uint8Array(b) }));
      }
      return out;
    });
  },
});
