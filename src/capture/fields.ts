// Every field of Istio's tools/common/config.Config, in Go struct order, with the
// istio-iptables flag, short name, environment variable and default that feed it. The CLI,
// the --config file reader and the defaults all come from this one table.

export type FieldKind = 'string' | 'bool' | 'int' | 'duration' | 'stringList';

export interface FieldDef {
  /** Conformance/config-file key: the Go field name with a lower-case first letter. */
  readonly key: string;
  readonly kind: FieldKind;
  /** istio-iptables long flag, when one exists. */
  readonly flag?: string;
  readonly short?: string;
  /** Environment variables that set the default, later ones winning (Istio's BindEnv + AdditionalEnv). */
  readonly env?: readonly string[];
  readonly default: string | boolean | number | readonly string[];
  readonly describe: string;
}

const s = (key: string, flag: string | undefined, short: string | undefined, env: string[], dflt: string, describe: string): FieldDef => ({
  key,
  kind: 'string',
  flag,
  short,
  env,
  default: dflt,
  describe,
});
const b = (key: string, flag: string | undefined, short: string | undefined, env: string[], describe: string): FieldDef => ({
  key,
  kind: 'bool',
  flag,
  short,
  env,
  default: false,
  describe,
});

export const FIELDS: readonly FieldDef[] = [
  s('proxyPort', 'envoy-port', 'p', [], '15001', 'Port to which all outbound TCP traffic is redirected (Envoy).'),
  s('inboundCapturePort', 'inbound-capture-port', 'z', ['INBOUND_CAPTURE_PORT'], '15006', 'Port to which inbound TCP traffic is redirected.'),
  s('inboundTunnelPort', 'inbound-tunnel-port', 'e', ['INBOUND_TUNNEL_PORT'], '15008', 'Istio tunnel port for inbound TCP traffic (never captured).'),
  s('proxyUID', 'proxy-uid', 'u', ['PROXY_UID'], '', 'Comma-separated UIDs whose traffic is not redirected (the proxy); empty means 1337.'),
  s('proxyGID', 'proxy-gid', 'g', ['PROXY_GID'], '', 'Comma-separated GIDs whose traffic is not redirected; empty means the same as --proxy-uid.'),
  s(
    'inboundInterceptionMode',
    'istio-inbound-interception-mode',
    'm',
    ['ISTIO_INBOUND_INTERCEPTION_MODE'],
    '',
    'Inbound capture mode: REDIRECT or TPROXY (empty means REDIRECT).',
  ),
  s('inboundTProxyMark', 'istio-inbound-tproxy-mark', 't', ['ISTIO_INBOUND_TPROXY_MARK'], '1337', 'Packet mark used for TPROXY inbound capture.'),
  s(
    'inboundTProxyRouteTable',
    'istio-inbound-tproxy-route-table',
    'r',
    ['ISTIO_INBOUND_TPROXY_ROUTE_TABLE'],
    '133',
    'Route table used for TPROXY inbound capture.',
  ),
  s(
    'inboundPortsInclude',
    'istio-inbound-ports',
    'b',
    ['ISTIO_INBOUND_PORTS'],
    '',
    'Comma-separated inbound ports to capture; "*" for all; empty captures no inbound traffic.',
  ),
  s(
    'inboundPortsExclude',
    'istio-local-exclude-ports',
    'd',
    ['ISTIO_LOCAL_EXCLUDE_PORTS'],
    '',
    'Comma-separated inbound ports not captured (only with --istio-inbound-ports "*").',
  ),
  s(
    'ownerGroupsInclude',
    undefined,
    undefined,
    ['ISTIO_OUTBOUND_OWNER_GROUPS'],
    '*',
    'Groups (names or GIDs) whose outbound traffic is captured; "*" for all.',
  ),
  s(
    'ownerGroupsExclude',
    undefined,
    undefined,
    ['ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE'],
    '',
    'Groups whose outbound traffic is not captured (only with owner groups "*").',
  ),
  s('outboundPortsInclude', 'istio-outbound-ports', 'q', ['ISTIO_OUTBOUND_PORTS'], '', 'Comma-separated outbound ports always redirected to Envoy.'),
  s(
    'outboundPortsExclude',
    'istio-local-outbound-ports-exclude',
    'o',
    ['ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE'],
    '',
    'Comma-separated outbound ports never redirected.',
  ),
  s(
    'outboundIPRangesInclude',
    'istio-service-cidr',
    'i',
    ['ISTIO_SERVICE_CIDR'],
    '',
    'Comma-separated CIDRs whose outbound traffic is redirected; "*" for all; empty for none.',
  ),
  s('outboundIPRangesExclude', 'istio-service-exclude-cidr', 'x', ['ISTIO_SERVICE_EXCLUDE_CIDR'], '', 'Comma-separated CIDRs never redirected.'),
  s(
    'rerouteVirtualInterfaces',
    'kube-virt-interfaces',
    'k',
    ['KUBE_VIRT_INTERFACES'],
    '',
    'Comma-separated virtual interfaces whose inbound traffic is treated as outbound.',
  ),
  s('excludeInterfaces', 'istio-exclude-interfaces', 'c', ['ISTIO_EXCLUDE_INTERFACES'], '', 'Comma-separated interfaces whose traffic is never captured.'),
  {
    key: 'iptablesProbePort',
    kind: 'int',
    flag: 'iptables-probe-port',
    env: ['IPTABLES_PROBE_PORT'],
    default: 15002,
    describe: 'Port the validation probe listens on.',
  },
  {
    key: 'probeTimeout',
    kind: 'duration',
    flag: 'probe-timeout',
    env: ['PROBE_TIMEOUT'],
    default: 5_000_000_000,
    describe: 'Validation timeout (Go duration such as 5s; integer nanoseconds in --config).',
  },
  b('dryRun', 'dry-run', 'n', ['DRY_RUN'], 'Print the rules instead of applying them.'),
  b('skipRuleApply', 'skip-rule-apply', undefined, ['SKIP_RULE_APPLY'], 'Do not apply rules (validation only).'),
  b('runValidation', 'run-validation', undefined, ['RUN_VALIDATION'], 'Check that redirection works (exit 126 when it does not).'),
  b('redirectDNS', 'redirect-dns', undefined, ['REDIRECT_DNS', 'ISTIO_META_DNS_CAPTURE'], 'Redirect DNS traffic to the agent on port 15053.'),
  b('dropInvalid', 'drop-invalid', undefined, ['DROP_INVALID', 'INVALID_DROP'], 'Drop packets in conntrack state INVALID.'),
  b('captureAllDNS', 'capture-all-dns', undefined, ['CAPTURE_ALL_DNS'], 'Capture all port-53 traffic, not only to the resolv.conf servers.'),
  b('enableIPv6', undefined, undefined, [], 'Emit IPv6 rules (auto-detected in a pod; --ipv6 here).'),
  { key: 'dnsServersV4', kind: 'stringList', env: [], default: [], describe: 'IPv4 DNS servers (read from /etc/resolv.conf by default).' },
  { key: 'dnsServersV6', kind: 'stringList', env: [], default: [], describe: 'IPv6 DNS servers (read from /etc/resolv.conf by default).' },
  s('networkNamespace', 'network-namespace', undefined, ['NETWORK_NAMESPACE'], '', 'Network namespace to apply the rules in.'),
  b('hostFilesystemPodNetwork', 'cni-mode', undefined, ['CNI_MODE'], 'Running as the CNI plugin.'),
  b('dualStack', 'dual-stack', undefined, ['DUAL_STACK', 'ISTIO_DUAL_STACK'], 'Enable IPv4 and IPv6 redirects for dual-stack.'),
  s('hostIP', undefined, undefined, [], '', 'Host IP (informational, never in rules).'),
  s(
    'hostIPv4LoopbackCidr',
    undefined,
    undefined,
    ['ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR'],
    '127.0.0.1/32',
    'IPv4 loopback CIDR of traffic meant for the application.',
  ),
  b('reconcile', 'reconcile', undefined, ['RECONCILE'], 'Replace pre-existing incompatible rules.'),
  b('cleanupOnly', 'cleanup-only', undefined, ['CLEANUP_ONLY'], 'Only remove Istio tables.'),
  b('forceApply', 'force-apply', undefined, ['FORCE_APPLY'], 'Apply even when the rules appear to be in place.'),
  b('nativeNftables', 'native-nftables', undefined, ['NATIVE_NFTABLES'], 'Use nftables (always the case here; accepted for compatibility).'),
  s('forceIptablesBinary', 'force-iptables-binary', undefined, ['FORCE_IPTABLES_BINARY'], '', 'Accepted for compatibility: "", legacy or nft.'),
];

export const FIELD_BY_KEY: ReadonlyMap<string, FieldDef> = new Map(FIELDS.map((f) => [f.key, f]));

/** A raw config: every value as it came from outside, before parsing. */
export type RawConfig = Record<string, string | boolean | number | readonly string[]>;

export function defaultRawConfig(): RawConfig {
  const out: RawConfig = {};
  for (const f of FIELDS) out[f.key] = f.default;
  return out;
}
