// Redirect -> CaptureConfig, as Istio's CNI sidecar path fills tools/common/config.Config:
// DefaultConfig, then the redirect's settings, then the three values upstream takes from the
// plugin process environment (owner groups and the IPv4 loopback CIDR). DNS capture means all
// port-53 traffic (redirectDNS and captureAllDNS together), so resolv.conf is never read.
import { CaptureConfig, parseCaptureConfig } from '../capture/config';
import { RawConfig } from '../capture/fields';
import type { SidecarRoutePlan } from '../netns/route-plan';
import { Redirect } from './redirect';

export interface CaptureContext {
  /** CNI_NETNS (recorded in the config; the rules themselves do not use it). */
  readonly netnsPath: string;
  /** Emit IPv6 rules: true when the pod's netns is dual-stack. */
  readonly enableIPv6: boolean;
  /** The plugin process environment. */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

/** Upstream reads these from the plugin's own environment inside FillConfigFromEnvironment. */
export const FROM_PROCESS_ENV: readonly [key: string, variable: string][] = [
  ['ownerGroupsInclude', 'ISTIO_OUTBOUND_OWNER_GROUPS'],
  ['ownerGroupsExclude', 'ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE'],
  ['hostIPv4LoopbackCidr', 'ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR'],
];

export function captureConfigFor(r: Redirect, ctx: CaptureContext): CaptureConfig {
  const raw: RawConfig = { hostFilesystemPodNetwork: true, networkNamespace: ctx.netnsPath };
  const varOf = new Map<string, string>();
  for (const [key, variable] of FROM_PROCESS_ENV) {
    const v = ctx.env?.[variable];
    if (v !== undefined) {
      raw[key] = v;
      varOf.set(key, variable);
    }
  }
  const base = parseCaptureConfig(raw, (key) => (varOf.has(key) ? `environment variable ${varOf.get(key)}` : `plugin capture setting "${key}"`));
  return {
    ...base,
    proxyPort: r.targetPort,
    proxyUIDs: [r.uid],
    proxyGIDs: [r.gid],
    inboundInterceptionMode: r.mode,
    outboundIPRangesInclude: r.includeIPCidrs,
    outboundIPRangesExclude: r.excludeIPCidrs,
    inboundPortsInclude: r.includeInboundPorts,
    inboundPortsExclude: r.excludeInboundPorts,
    outboundPortsInclude: r.includeOutboundPorts,
    outboundPortsExclude: r.excludeOutboundPorts,
    excludeInterfaces: r.excludeInterfaces,
    rerouteVirtualInterfaces: r.rerouteVirtualInterfaces,
    redirectDNS: r.dnsRedirect,
    captureAllDNS: r.dnsRedirect,
    dropInvalid: r.invalidDrop,
    dualStack: r.dualStack,
    enableIPv6: ctx.enableIPv6,
  };
}

/**
 * Netlink setup that goes with the rules (upstream: tproxy.ConfigureRoutes, after the rules are
 * applied): with IPv6, the address ::6/128 on lo (the passthrough source the rules match); in
 * TPROXY mode with inbound capture, the mark rule and local route for IPv4 and, with IPv6, IPv6.
 */
/** undefined when the rules need no routes or addresses. */
export function routePlanFor(cfg: CaptureConfig): SidecarRoutePlan | undefined {
  const hasInbound = cfg.inboundPortsInclude === '*' || cfg.inboundPortsInclude.length > 0;
  const tproxy =
    cfg.inboundInterceptionMode === 'TPROXY' && hasInbound
      ? { mark: cfg.inboundTProxyMark as number, table: cfg.inboundTProxyRouteTable as number, ipv6: cfg.enableIPv6 }
      : undefined;
  if (!tproxy && !cfg.enableIPv6) return undefined;
  return { kind: 'sidecar', loopbackV6: cfg.enableIPv6, ...(tproxy ? { tproxy } : {}) };
}
