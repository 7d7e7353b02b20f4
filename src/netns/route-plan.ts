// The policy routing a set of rules relies on, as data: what the dataplane port's setupRoutes and
// removeRoutes take. Two kinds, one per component that needs routes:
//   sidecar  TPROXY inbound capture: `ip rule fwmark <mark> lookup <table>` and
//            `ip route add local default dev lo table <table>`, and with IPv6 ::6/128 on lo
//            (src/netns/tproxy-routes.ts; upstream tproxy.ConfigureRoutes)
//   ambient  in-pod redirection to ztunnel: `ip rule fwmark 0x111/0xfff lookup 100 pref 32764`
//            and `ip route replace local default dev lo table 100` (src/netns/ambient-routes.ts)
import { INPOD_TPROXY_MARK, INPOD_TPROXY_MASK, ROUTE_TABLE, RULE_PRIORITY } from '../ambient/tables';

export interface SidecarRoutePlan {
  readonly kind: 'sidecar';
  /** ::6/128 on lo, the passthrough source address the IPv6 rules match. */
  readonly loopbackV6: boolean;
  /** TPROXY with inbound capture: the mark rule and local route, IPv6 too when `ipv6`. */
  readonly tproxy?: { readonly mark: number; readonly table: number; readonly ipv6: boolean };
}

export interface AmbientRoutePlan {
  readonly kind: 'ambient';
  /** AMBIENT_IPV6: the IPv6 rule and route too (the route only when lo has IPv6). */
  readonly ipv6: boolean;
  readonly mark: number;
  readonly mask: number;
  readonly table: number;
  readonly priority: number;
}

export type RoutePlan = SidecarRoutePlan | AmbientRoutePlan;

/**
 * What removal needs to find routes again; both address families are always removed. Sidecar
 * routes are found by mark and table (a DEL does not know the pod's config: the defaults).
 */
export type RouteRemoval = { readonly kind: 'sidecar'; readonly mark: number; readonly table: number } | Omit<AmbientRoutePlan, 'ipv6'>;

/** Ambient's fixed marks and table (they are ztunnel's), with or without IPv6. */
export const ambientRoutePlan = (ipv6: boolean): AmbientRoutePlan => ({
  kind: 'ambient',
  ipv6,
  mark: INPOD_TPROXY_MARK,
  mask: INPOD_TPROXY_MASK,
  table: ROUTE_TABLE,
  priority: RULE_PRIORITY,
});
