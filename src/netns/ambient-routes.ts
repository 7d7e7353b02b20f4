// Policy routing ambient in-pod redirection needs inside the pod netns: packets whose mark
// carries 0x111 (restored from the connection mark ztunnel's accepted connections get) look up
// table 100, whose only route is `local default dev lo`, so replies reach ztunnel's sockets in
// the pod instead of leaving through eth0.
//
//   ip rule add fwmark 0x111/0xfff lookup 100 pref 32764      (and -6 when IPv6 is on)
//   ip route replace local 0.0.0.0/0 dev lo table 100          (and ::/0 when IPv6 is on and lo has it)
import * as fs from 'node:fs';
import { RouteType } from 'netlink/dist/rt/gen_structs';
import { withNetnsSync } from './nft';
import { AmbientRoutePlan, ambientRoutePlan } from './route-plan';
import { AF_INET, AF_INET6, CREATE_EXCL, Rtnl, isExists, loopbackIndex, withRtnl } from './rtnl';

/** NLM_F_CREATE | NLM_F_REPLACE: `ip route replace`. */
const CREATE_REPLACE = 0x400 | 0x100;

/** What finds the rule and routes again (both families are looked at). */
type AmbientRouteRef = Omit<AmbientRoutePlan, 'ipv6'>;

const DISABLE_IPV6_LO = '/proc/sys/net/ipv6/conf/lo/disable_ipv6';

/**
 * Whether lo in the netns has IPv6 turned off. /proc/sys/net answers for the reading thread's
 * netns, so the file is read with the JS thread briefly inside it. A read error counts as "not
 * disabled" (Istio goes on and lets the route add fail if it must).
 */
export function loopbackIPv6Disabled(netnsPath?: string): boolean {
  const read = () => {
    try {
      return fs.readFileSync(DISABLE_IPV6_LO, 'utf8').trim() === '1';
    } catch {
      return false;
    }
  };
  return netnsPath ? withNetnsSync(netnsPath, read) : read();
}

function tableOf(attrs: { table?: number }, data: { table?: number }): number | undefined {
  return attrs.table ?? data.table;
}

async function markRules(rt: Rtnl, family: number, r: AmbientRouteRef) {
  const rules = await rt.getRules({ family });
  return rules.filter(
    (x) =>
      x.data.family === family &&
      x.attrs.fwmark === r.mark &&
      (x.attrs.fwmask ?? 0xffffffff) === r.mask &&
      (x.attrs.priority ?? 0) === r.priority &&
      tableOf(x.attrs, x.data) === r.table,
  );
}

async function localDefaultRoutes(rt: Rtnl, family: number, r: AmbientRouteRef) {
  const routes = await rt.getRoutes({ family });
  return routes.filter(
    (x) =>
      x.data.family === family &&
      (x.data.dstLen ?? 0) === 0 &&
      tableOf(x.attrs, x.data) === r.table &&
      (x.data.type === RouteType.LOCAL || x.data.type === 'LOCAL'),
  );
}

/**
 * Adds the mark rule and the local default route; running it again changes nothing. `lo6Disabled`
 * says whether lo has IPv6 turned off (then no IPv6 route, as upstream).
 */
export async function configureAmbientRoutes(rt: Rtnl, r: AmbientRoutePlan, lo6Disabled: boolean): Promise<void> {
  const lo = await loopbackIndex(rt);
  const families = r.ipv6 ? [AF_INET, AF_INET6] : [AF_INET];
  for (const family of families) {
    // Checked first: a kernel without duplicate detection would add a second copy.
    if ((await markRules(rt, family, r)).length === 0) {
      await rt
        .newRule(
          { family, action: 'toTbl', table: r.table < 256 ? r.table : 0 },
          { fwmark: r.mark, fwmask: r.mask, priority: r.priority, table: r.table },
          { flags: CREATE_EXCL },
        )
        .catch((e) => {
          if (!isExists(e)) throw new Error(`adding ip rule fwmark ${hexMark(r)} lookup ${r.table}: ${(e as Error).message}`);
        });
    }
  }
  for (const family of families) {
    if (family === AF_INET6 && lo6Disabled) continue;
    await rt
      .newRoute(
        { family, dstLen: 0, table: r.table < 256 ? r.table : 0, type: 'LOCAL', scope: 'HOST', protocol: 'BOOT' },
        { oif: lo, table: r.table },
        { flags: CREATE_REPLACE },
      )
      .catch((e) => {
        const dst = family === AF_INET ? '0.0.0.0/0' : '::/0';
        throw new Error(`replacing route local ${dst} dev lo table ${r.table}: ${(e as Error).message}`);
      });
  }
}

/** Removes the mark rules and local default routes of both families; absent ones are no error. */
export async function removeAmbientRoutes(rt: Rtnl, r: AmbientRouteRef): Promise<void> {
  for (const family of [AF_INET, AF_INET6]) {
    for (const rule of await markRules(rt, family, r)) {
      await rt.delRule(rule.data, { fwmark: r.mark, fwmask: r.mask, priority: r.priority, table: r.table });
    }
    for (const route of await localDefaultRoutes(rt, family, r)) {
      await rt.delRoute(route.data, { table: r.table, oif: route.attrs.oif });
    }
  }
}

/** configureAmbientRoutes in the netns at `netnsPath` (the current one when undefined). */
export function configureAmbientRoutesIn(netnsPath: string | undefined, r: AmbientRoutePlan): Promise<void> {
  const lo6Disabled = r.ipv6 && loopbackIPv6Disabled(netnsPath);
  return withRtnl(netnsPath, (rt) => configureAmbientRoutes(rt, r, lo6Disabled));
}

export function removeAmbientRoutesIn(netnsPath: string | undefined, r: AmbientRouteRef = ambientRoutePlan(false)): Promise<void> {
  return withRtnl(netnsPath, (rt) => removeAmbientRoutes(rt, r));
}

const hexMark = (r: AmbientRouteRef) => `0x${r.mark.toString(16)}/0x${r.mask.toString(16)}`;
