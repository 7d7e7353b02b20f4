// CaptureConfig: the typed form of Istio's config.Config, as the sidecar capture reads it.
import { InputError } from '../values/errors';
import {
  Cidr,
  Group,
  Id,
  IfName,
  InterceptionMode,
  IpText,
  Port,
  U32,
  parseCidrSelection,
  parseGroupSelection,
  parseGroup,
  parseIPv4LoopbackCidr,
  parseIdList,
  parseIfNameList,
  parseInterceptionMode,
  parseIpText,
  parsePort,
  parsePortList,
  parsePortSelection,
  parseU32,
  ipString,
  splitList,
} from '../values/typed';
import { FIELDS, FIELD_BY_KEY, RawConfig, defaultRawConfig } from './fields';

export interface CaptureConfig {
  proxyPort: Port;
  inboundCapturePort: Port;
  inboundTunnelPort: Port;
  proxyUIDs: Id[];
  proxyGIDs: Id[];
  inboundInterceptionMode: InterceptionMode;
  inboundTProxyMark: U32;
  inboundTProxyRouteTable: U32;
  /** '*' = every port; [] = no inbound capture. */
  inboundPortsInclude: '*' | Port[];
  inboundPortsExclude: Port[];
  ownerGroupsInclude: '*' | Group[];
  ownerGroupsExclude: Group[];
  outboundPortsInclude: Port[];
  outboundPortsExclude: Port[];
  /** '*' = all outbound; [] = none. */
  outboundIPRangesInclude: '*' | Cidr[];
  outboundIPRangesExclude: Cidr[];
  rerouteVirtualInterfaces: IfName[];
  excludeInterfaces: IfName[];
  iptablesProbePort: Port;
  /** Nanoseconds, as Go's time.Duration. */
  probeTimeoutNs: number;
  dryRun: boolean;
  skipRuleApply: boolean;
  runValidation: boolean;
  redirectDNS: boolean;
  dropInvalid: boolean;
  captureAllDNS: boolean;
  enableIPv6: boolean;
  dnsServersV4: IpText[];
  dnsServersV6: IpText[];
  networkNamespace: string;
  hostFilesystemPodNetwork: boolean;
  dualStack: boolean;
  hostIP: string;
  hostIPv4LoopbackCidr: Cidr;
  reconcile: boolean;
  cleanupOnly: boolean;
  forceApply: boolean;
  nativeNftables: boolean;
  forceIptablesBinary: '' | 'legacy' | 'nft';
}

/** Names the origin of a value for error messages: a flag, a config key or an env var. */
export type SourceOf = (key: string) => string;
export const configKeySource: SourceOf = (key) => `config key "${key}"`;

const DEFAULT_PROXY_UID = '1337';
const MAX_OWNER_GROUPS_INCLUDE = 64;

function str(raw: RawConfig, key: string, src: SourceOf): string {
  const v = raw[key];
  if (typeof v !== 'string') throw new InputError(src(key), v, 'expected a string');
  return v;
}

function bool(raw: RawConfig, key: string, src: SourceOf): boolean {
  const v = raw[key];
  if (typeof v === 'boolean') return v;
  throw new InputError(src(key), v, 'expected true or false');
}

function list(raw: RawConfig, key: string, src: SourceOf): string[] {
  const v = raw[key];
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return [...v];
  if (typeof v === 'string') return splitList(v);
  throw new InputError(src(key), v, 'expected a list of strings');
}

/** Go duration ("5s", "500ms", "1m30s") or integer nanoseconds. */
export function parseDurationNs(source: string, v: unknown): number {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return v;
  if (typeof v === 'string') {
    if (/^[0-9]+$/.test(v)) return Number(v);
    const unit: Record<string, number> = { ns: 1, us: 1e3, µs: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };
    const re = /([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)/y;
    let total = 0;
    let pos = 0;
    while (pos < v.length) {
      re.lastIndex = pos;
      const m = re.exec(v);
      if (!m) break;
      total += Number(m[1]) * unit[m[2]];
      pos = re.lastIndex;
    }
    if (pos === v.length && v.length > 0) return Math.round(total);
  }
  throw new InputError(source, v, 'expected a duration such as 5s or 500ms');
}

/** Checks keys: every key must be a known config field. */
export function checkKeys(obj: Record<string, unknown>, src: SourceOf): void {
  for (const k of Object.keys(obj)) {
    if (!FIELD_BY_KEY.has(k)) {
      throw new InputError(src(k), k, `unknown config key; known keys: ${FIELDS.map((f) => f.key).join(', ')}`);
    }
  }
}

/** Parse a raw config (defaults filled for missing keys) into the typed CaptureConfig. */
export function parseCaptureConfig(partial: RawConfig, src: SourceOf = configKeySource): CaptureConfig {
  checkKeys(partial, src);
  const raw: RawConfig = { ...defaultRawConfig(), ...partial };
  const S = (k: string) => str(raw, k, src);
  const B = (k: string) => bool(raw, k, src);

  const uidText = S('proxyUID') === '' ? DEFAULT_PROXY_UID : S('proxyUID');
  const gidText = S('proxyGID') === '' ? uidText : S('proxyGID');

  const excludeRanges = parseCidrSelection(src('outboundIPRangesExclude'), S('outboundIPRangesExclude'));
  if (excludeRanges === '*') {
    throw new InputError(src('outboundIPRangesExclude'), '*', 'a wildcard cannot be excluded');
  }

  const ownerInclude = parseGroupSelection(src('ownerGroupsInclude'), S('ownerGroupsInclude'));
  if (ownerInclude !== '*' && ownerInclude.length > MAX_OWNER_GROUPS_INCLUDE) {
    throw new InputError(src('ownerGroupsInclude'), S('ownerGroupsInclude'), `at most ${MAX_OWNER_GROUPS_INCLUDE} groups, got ${ownerInclude.length}`);
  }

  const probePortRaw = raw.iptablesProbePort;
  const forceBinary = S('forceIptablesBinary');
  if (forceBinary !== '' && forceBinary !== 'legacy' && forceBinary !== 'nft') {
    throw new InputError(src('forceIptablesBinary'), forceBinary, 'expected "", legacy or nft');
  }

  return {
    proxyPort: parsePort(src('proxyPort'), S('proxyPort')),
    inboundCapturePort: parsePort(src('inboundCapturePort'), S('inboundCapturePort')),
    inboundTunnelPort: parsePort(src('inboundTunnelPort'), S('inboundTunnelPort')),
    proxyUIDs: parseIdList(src('proxyUID'), uidText),
    proxyGIDs: parseIdList(src('proxyGID'), gidText),
    inboundInterceptionMode: parseInterceptionMode(src('inboundInterceptionMode'), S('inboundInterceptionMode')),
    inboundTProxyMark: parseU32(src('inboundTProxyMark'), S('inboundTProxyMark')),
    inboundTProxyRouteTable: parseU32(src('inboundTProxyRouteTable'), S('inboundTProxyRouteTable')),
    inboundPortsInclude: parsePortSelection(src('inboundPortsInclude'), S('inboundPortsInclude')),
    inboundPortsExclude: parsePortList(src('inboundPortsExclude'), S('inboundPortsExclude')),
    ownerGroupsInclude: ownerInclude,
    ownerGroupsExclude: splitList(S('ownerGroupsExclude')).map((g) => parseGroup(src('ownerGroupsExclude'), g)),
    outboundPortsInclude: parsePortList(src('outboundPortsInclude'), S('outboundPortsInclude')),
    outboundPortsExclude: parsePortList(src('outboundPortsExclude'), S('outboundPortsExclude')),
    outboundIPRangesInclude: parseCidrSelection(src('outboundIPRangesInclude'), S('outboundIPRangesInclude')),
    outboundIPRangesExclude: excludeRanges,
    rerouteVirtualInterfaces: parseIfNameList(src('rerouteVirtualInterfaces'), S('rerouteVirtualInterfaces')),
    excludeInterfaces: parseIfNameList(src('excludeInterfaces'), S('excludeInterfaces')),
    // 0 is Istio's "not set" in tests; any other value must be a real port.
    iptablesProbePort: (probePortRaw === 0 || probePortRaw === '0' ? 0 : parsePort(src('iptablesProbePort'), String(probePortRaw))) as Port,
    probeTimeoutNs: parseDurationNs(src('probeTimeout'), raw.probeTimeout),
    dryRun: B('dryRun'),
    skipRuleApply: B('skipRuleApply'),
    runValidation: B('runValidation'),
    redirectDNS: B('redirectDNS'),
    dropInvalid: B('dropInvalid'),
    captureAllDNS: B('captureAllDNS'),
    enableIPv6: B('enableIPv6'),
    dnsServersV4: list(raw, 'dnsServersV4', src).map((a) => parseIpText(src('dnsServersV4'), a, 4)),
    dnsServersV6: list(raw, 'dnsServersV6', src).map((a) => parseIpText(src('dnsServersV6'), a, 6)),
    networkNamespace: S('networkNamespace'),
    hostFilesystemPodNetwork: B('hostFilesystemPodNetwork'),
    dualStack: B('dualStack'),
    hostIP: S('hostIP') === '' ? '' : ipString(parseIpText(src('hostIP'), S('hostIP'), S('hostIP').includes(':') ? 6 : 4).addr),
    hostIPv4LoopbackCidr: parseIPv4LoopbackCidr(src('hostIPv4LoopbackCidr'), S('hostIPv4LoopbackCidr')),
    reconcile: B('reconcile'),
    cleanupOnly: B('cleanupOnly'),
    forceApply: B('forceApply'),
    nativeNftables: B('nativeNftables'),
    forceIptablesBinary: forceBinary,
  };
}
