// Policy routing TPROXY inbound capture needs inside the pod netns: packets carrying the TPROXY
// mark look up a table whose default route is `local` on lo, so they are delivered to the
// transparent listener. IPv6 also gets ::6 on lo, the inbound passthrough source address.
import type { SidecarRoutePlan } from './route-plan';
import { AF_INET, AF_INET6, CREATE_EXCL, Rtnl, isExists, loopbackIndex, withRtnl } from './rtnl';

type TproxyRef = { readonly mark: number; readonly table: number };

const PASSTHROUGH_V6 = Buffer.from('00000000000000000000000000000006', 'hex');

async function markRuleExists(rt: Rtnl, family: number, mark: number, table: number): Promise<boolean> {
  const rules = await rt.getRules({ family });
  return rules.some((r) => r.data.family === family && r.attrs.fwmark === mark && (r.attrs.table ?? r.data.table) === table);
}

export async function configureRoutes(rt: Rtnl, plan: SidecarRoutePlan): Promise<void> {
  const lo = await loopbackIndex(rt);
  if (plan.loopbackV6) {
    await rt
      .newAddress({ family: AF_INET6, prefixlen: 128, index: lo }, { address: PASSTHROUGH_V6, local: PASSTHROUGH_V6 }, { flags: CREATE_EXCL })
      .catch((e) => {
        if (!isExists(e)) throw new Error(`adding ::6/128 to lo: ${(e as Error).message}`);
      });
  }
  const r = plan.tproxy;
  if (!r) return;
  for (const family of r.ipv6 ? [AF_INET, AF_INET6] : [AF_INET]) {
    // Checked first: the kernel accepts duplicate rules, and a second run must change nothing.
    if (!(await markRuleExists(rt, family, r.mark, r.table))) {
      await rt.newRule({ family, action: 'toTbl', table: r.table < 256 ? r.table : 0 }, { fwmark: r.mark, table: r.table }, { flags: CREATE_EXCL });
    }
    await rt
      .newRoute(
        { family, dstLen: 0, table: r.table < 256 ? r.table : 0, type: 'LOCAL', scope: 'HOST', protocol: 'BOOT' },
        { oif: lo, table: r.table },
        { flags: CREATE_EXCL },
      )
      .catch((e) => {
        if (!isExists(e)) throw new Error(`adding local default route to table ${r.table}: ${(e as Error).message}`);
      });
  }
}

/** Remove the mark rules and the table's routes; absent ones are not an error. */
export async function removeRoutes(rt: Rtnl, r: TproxyRef): Promise<void> {
  for (const family of [AF_INET, AF_INET6]) {
    while (await markRuleExists(rt, family, r.mark, r.table)) {
      await rt.delRule({ family, action: 'toTbl', table: r.table < 256 ? r.table : 0 }, { fwmark: r.mark, table: r.table });
    }
    const routes = await rt.getRoutes({ family });
    for (const route of routes.filter((x) => (x.attrs.table ?? x.data.table) === r.table)) {
      await rt.delRoute(route.data, { table: r.table, oif: route.attrs.oif, dst: route.attrs.dst });
    }
  }
}

export function configureRoutesIn(netnsPath: string | undefined, plan: SidecarRoutePlan): Promise<void> {
  return withRtnl(netnsPath, (rt) => configureRoutes(rt, plan));
}

export function removeRoutesIn(netnsPath: string | undefined, r: TproxyRef): Promise<void> {
  return withRtnl(netnsPath, (rt) => removeRoutes(rt, r));
}
