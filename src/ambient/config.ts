// Typed inputs of the ambient rule builders: the node-wide AmbientConfig (Istio's
// cni/pkg/config.AmbientConfig, keys named as the conformance input names them), the per-pod
// overrides, and what the host rules need. Every value is parsed once here; an error names the
// key (or annotation) and the value.
import { InputError } from '../values/errors';
import { Id, IfName, IpAddress, NftName, parseId, parseIfName, parseIpAddress, parseNftName, splitList } from '../values/typed';
import { DEFAULT_PROBE_SNAT_V4, DEFAULT_PROBE_SNAT_V6, PROBE_SET_PREFIX } from './tables';

export interface AmbientConfig {
  /** Istio's iptables trace switch; nothing in the nft rules reads it. */
  readonly traceLogging: boolean;
  /** AMBIENT_IPV6: write IPv6 rules, routes and sets. A node-wide switch, not detected per pod. */
  readonly enableIPv6: boolean;
  /** AMBIENT_DNS_CAPTURE: the default for pods that do not say otherwise. */
  readonly redirectDNS: boolean;
  /** Where the host SNATs kubelet's probes to, so the pod's rules can let them through. */
  readonly hostProbeSNATAddress: IpAddress;
  readonly hostProbeV6SNATAddress: IpAddress;
  /** Carried for parity with Istio; the rule text does not depend on these three. */
  readonly reconcile: boolean;
  readonly cleanupOnly: boolean;
  readonly forceApply: boolean;
}

/** The pod's own DNS capture choice (annotation ambient.istio.io/dns-capture). */
export type PodDNSOverride = 'PodDNSUnset' | 'PodDNSEnabled' | 'PodDNSDisabled';
export const POD_DNS_OVERRIDES: readonly PodDNSOverride[] = ['PodDNSUnset', 'PodDNSEnabled', 'PodDNSDisabled'];

export interface PodOverrides {
  /** Interfaces whose inbound TCP is treated as outbound (KubeVirt, VMs, DinD). */
  readonly virtualInterfaces: readonly IfName[];
  /** No inbound capture (ingress-style workloads). */
  readonly ingressMode: boolean;
  readonly dnsProxy: PodDNSOverride;
}

export interface HostRuleParams {
  /** The UID kubelet runs as: only its sockets' probes are SNATed. */
  readonly kubeletUID: Id;
  /** Prefix of the probe address sets (`<prefix>-v4`, `<prefix>-v6`). */
  readonly probeIPSetName: NftName;
}

/** Names where a key came from, for error messages. */
export type KeySource = (key: string) => string;
export const keySource: KeySource = (key) => `config key "${key}"`;

export const AMBIENT_CONFIG_KEYS = [
  'traceLogging',
  'enableIPv6',
  'redirectDNS',
  'hostProbeSNATAddress',
  'hostProbeV6SNATAddress',
  'reconcile',
  'cleanupOnly',
  'forceApply',
] as const;
export const POD_OVERRIDE_KEYS = ['virtualInterfaces', 'ingressMode', 'dnsProxy'] as const;
export const HOST_RULE_KEYS = ['kubeletUID', 'probeIPSetName'] as const;

export const NO_POD_OVERRIDES: PodOverrides = { virtualInterfaces: [], ingressMode: false, dnsProxy: 'PodDNSUnset' };

/** Raw values as they come from a JSON object. */
export type RawObject = Readonly<Record<string, unknown>>;

function checkKeys(raw: RawObject, known: readonly string[], src: KeySource): void {
  for (const k of Object.keys(raw)) {
    if (!known.includes(k)) throw new InputError(src(k), k, `unknown config key; known keys: ${known.join(', ')}`);
  }
}

function bool(raw: RawObject, key: string, dflt: boolean, src: KeySource): boolean {
  const v = raw[key];
  if (v === undefined) return dflt;
  if (typeof v === 'boolean') return v;
  throw new InputError(src(key), v, 'expected true or false');
}

function str(raw: RawObject, key: string, dflt: string, src: KeySource): string {
  const v = raw[key];
  if (v === undefined) return dflt;
  if (typeof v === 'string') return v;
  throw new InputError(src(key), v, 'expected a string');
}

/** Missing keys take Istio's production defaults (SNAT addresses from nodeagent/options.go). */
export function parseAmbientConfig(raw: RawObject, src: KeySource = keySource): AmbientConfig {
  checkKeys(raw, AMBIENT_CONFIG_KEYS, src);
  const ip = (key: string, dflt: string, family: 4 | 6) => parseIpAddress(src(key), str(raw, key, dflt, src), family);
  return {
    traceLogging: bool(raw, 'traceLogging', false, src),
    enableIPv6: bool(raw, 'enableIPv6', false, src),
    redirectDNS: bool(raw, 'redirectDNS', false, src),
    hostProbeSNATAddress: ip('hostProbeSNATAddress', DEFAULT_PROBE_SNAT_V4, 4),
    hostProbeV6SNATAddress: ip('hostProbeV6SNATAddress', DEFAULT_PROBE_SNAT_V6, 6),
    reconcile: bool(raw, 'reconcile', false, src),
    cleanupOnly: bool(raw, 'cleanupOnly', false, src),
    forceApply: bool(raw, 'forceApply', false, src),
  };
}

/**
 * Interface names: a list, or one comma-separated string as the annotation holds them (items
 * trimmed, empty ones dropped). Unlike Istio, each name is validated, so it cannot carry nft syntax.
 */
export function parseVirtualInterfaces(source: string, v: unknown): IfName[] {
  if (typeof v === 'string') return splitList(v).map((x) => parseIfName(source, x));
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) {
    return (v as string[])
      .map((x) => x.trim())
      .filter((x) => x !== '')
      .map((x) => parseIfName(source, x));
  }
  throw new InputError(source, v, 'expected a list of interface names');
}

export function parsePodOverrides(raw: RawObject, src: KeySource = keySource): PodOverrides {
  checkKeys(raw, POD_OVERRIDE_KEYS, src);
  const dns = str(raw, 'dnsProxy', 'PodDNSUnset', src);
  if (!(POD_DNS_OVERRIDES as readonly string[]).includes(dns)) {
    throw new InputError(src('dnsProxy'), dns, `expected one of ${POD_DNS_OVERRIDES.join(', ')}`);
  }
  return {
    virtualInterfaces: raw.virtualInterfaces === undefined ? [] : parseVirtualInterfaces(src('virtualInterfaces'), raw.virtualInterfaces),
    ingressMode: bool(raw, 'ingressMode', false, src),
    dnsProxy: dns as PodDNSOverride,
  };
}

/** kubeletUID is required (a string or number); the set prefix defaults to istio-inpod-probes. */
export function parseHostRuleParams(raw: RawObject, src: KeySource = keySource): HostRuleParams {
  checkKeys(raw, HOST_RULE_KEYS, src);
  const uid = raw.kubeletUID;
  if (uid === undefined) throw new InputError(src('kubeletUID'), uid, 'required: the UID kubelet runs as');
  if (typeof uid !== 'string' && typeof uid !== 'number') throw new InputError(src('kubeletUID'), uid, 'expected a numeric UID');
  return {
    kubeletUID: parseId(src('kubeletUID'), String(uid)),
    // The longest name nft takes is 255; the sets add "-v4" / "-v6".
    probeIPSetName: parseNftName(src('probeIPSetName'), str(raw, 'probeIPSetName', PROBE_SET_PREFIX, src), 252),
  };
}

export type AmbientRuleSet = 'pod' | 'host';

export type AmbientRulesInput =
  | { readonly ruleSet: 'pod'; readonly config: AmbientConfig; readonly overrides: PodOverrides }
  | { readonly ruleSet: 'host'; readonly config: AmbientConfig; readonly host: HostRuleParams };

/**
 * One flat object: the AmbientConfig keys plus the pod override keys (pod) or the host keys
 * (host). A key of the other rule set is an unknown key.
 */
export function parseAmbientRulesObject(
  ruleSet: AmbientRuleSet,
  obj: unknown,
  src: KeySource = keySource,
  /** Names the object as a whole (e.g. the file) when it is not an object. */
  whole = 'config',
): AmbientRulesInput {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
    throw new InputError(whole, obj, 'expected a JSON object of config keys');
  }
  const raw = obj as RawObject;
  const own: readonly string[] = ruleSet === 'pod' ? POD_OVERRIDE_KEYS : HOST_RULE_KEYS;
  checkKeys(raw, [...AMBIENT_CONFIG_KEYS, ...own], src);
  const pick = (keys: readonly string[]) => Object.fromEntries(Object.entries(raw).filter(([k]) => keys.includes(k)));
  const config = parseAmbientConfig(pick(AMBIENT_CONFIG_KEYS), src);
  return ruleSet === 'pod'
    ? { ruleSet, config, overrides: parsePodOverrides(pick(POD_OVERRIDE_KEYS), src) }
    : { ruleSet, config, host: parseHostRuleParams(pick(HOST_RULE_KEYS), src) };
}

export const Annotations = {
  bypassInboundCapture: 'ambient.istio.io/bypass-inbound-capture',
  dnsCapture: 'ambient.istio.io/dns-capture',
  rerouteVirtualInterfaces: 'istio.io/reroute-virtual-interfaces',
} as const;

/** Go's strconv.ParseBool. */
function goParseBool(s: string): boolean | undefined {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(s)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(s)) return false;
  return undefined;
}

/**
 * A pod's overrides from its annotations, as Istio's agent reads them. A boolean annotation that
 * does not parse is ignored with a warning (as upstream); a virtual interface name that is not a
 * valid interface name is an error naming the annotation (upstream pastes it into the rules).
 */
export function podOverridesFromAnnotations(annotations: Readonly<Record<string, string>>, warn: (message: string) => void = () => {}): PodOverrides {
  const boolAnnotation = (name: string): boolean | undefined => {
    const v = annotations[name];
    if (v === undefined) return undefined;
    const b = goParseBool(v);
    if (b === undefined) warn(`annotation ${name}=${JSON.stringify(v)} is not a boolean; ignored`);
    return b;
  };
  const dns = boolAnnotation(Annotations.dnsCapture);
  const virt = annotations[Annotations.rerouteVirtualInterfaces];
  return {
    ingressMode: boolAnnotation(Annotations.bypassInboundCapture) ?? false,
    dnsProxy: dns === undefined ? 'PodDNSUnset' : dns ? 'PodDNSEnabled' : 'PodDNSDisabled',
    virtualInterfaces: virt === undefined ? [] : parseVirtualInterfaces(`annotation ${Annotations.rerouteVirtualInterfaces}`, virt),
  };
}
