// Pod annotations and istio-proxy settings -> a typed Redirect (Istio's sidecar_redirect.go
// semantics). Every value is parsed here; a bad one is an InputError naming the annotation (or
// container setting) and the value. Nothing downstream ever sees an annotation string.
import { InputError, quote } from '../values/errors';
import { Cidr, Id, IfName, InterceptionMode, Port, parseCidr, parseId, parseIfName, parsePort } from '../values/typed';
import { Annotation, ProxyEnv } from './annotations';
import { PodInfo, parseGoBool } from './podinfo';

export const DEFAULT_PROXY_PORT = 15001 as Port;
export const DEFAULT_PROXY_ID = 1337 as Id;
/** Always excluded from inbound capture on the CNI path: status, health and Prometheus ports. */
export const ALWAYS_EXCLUDED_INBOUND: readonly Port[] = [15020, 15021, 15090] as Port[];
/** Default for excludeInboundPorts and excludeOutboundPorts: the status port. */
export const STATUS_PORT = 15020 as Port;

export interface Redirect {
  readonly targetPort: Port;
  readonly mode: InterceptionMode;
  readonly uid: Id;
  readonly gid: Id;
  readonly includeIPCidrs: '*' | Cidr[];
  readonly excludeIPCidrs: Cidr[];
  readonly includeInboundPorts: '*' | Port[];
  /** Already holds 15020, 15021 and 15090. */
  readonly excludeInboundPorts: Port[];
  readonly includeOutboundPorts: Port[];
  readonly excludeOutboundPorts: Port[];
  readonly rerouteVirtualInterfaces: IfName[];
  readonly excludeInterfaces: IfName[];
  readonly dnsRedirect: boolean;
  readonly dualStack: boolean;
  readonly invalidDrop: boolean;
  /** Where each setting came from ("default", "annotation <key>", ...), for explanations. */
  readonly from: Readonly<Record<RedirectSetting, string>>;
}

export type RedirectSetting = Exclude<keyof Redirect, 'from'>;

export type Warn = (msg: string) => void;

const src = (key: string) => `annotation ${key}`;

/** Comma list as the annotation gives it: blanks around items are ignored, an empty item is an error. */
function items(key: string, value: string): string[] {
  if (value.trim() === '') return [];
  const parts = value.split(',').map((x) => x.trim());
  if (parts.some((p) => p === '')) throw new InputError(src(key), value, 'empty item in the list (a stray comma?)');
  return parts;
}

/** Parse each item; an item error is reported with the whole annotation value. */
function each<T>(key: string, value: string, parse: (item: string) => T): T[] {
  return items(key, value).map((item) => {
    try {
      return parse(item);
    } catch (e) {
      if (e instanceof InputError) throw new InputError(src(key), value, `item ${quote(item)}: ${e.reason}`);
      throw e;
    }
  });
}

const port = (key: string) => (item: string) => parsePort(src(key), item);

function ports(key: string, value: string, wildcard: 'allowed' | string): '*' | Port[] {
  if (value.trim() === '*') {
    if (wildcard === 'allowed') return '*';
    throw new InputError(src(key), value, wildcard);
  }
  return each(key, value, port(key));
}

function ifNames(key: string, value: string): IfName[] {
  return each(key, value, (item) => {
    // Istio's rule (a letter first) on top of the kernel's: the name is pasted into nft rules.
    if (!/^[a-zA-Z]/.test(item)) throw new InputError(src(key), item, 'interface names start with a letter');
    return parseIfName(src(key), item);
  });
}

function cidrs(key: string, value: string, wildcard: boolean): '*' | Cidr[] {
  if (value.trim() === '*') {
    if (wildcard) return '*';
    throw new InputError(src(key), value, '"*" cannot be excluded; list CIDRs');
  }
  return each(key, value, (item) => parseCidr(src(key), item));
}

function dedup<T>(xs: readonly T[]): T[] {
  return [...new Set(xs)];
}

/**
 * The redirect for a pod that passed the sidecar checks. Throws InputError for the first invalid
 * annotation or istio-proxy setting; unparsable boolean env values are warned about and read as
 * false, as upstream does.
 */
export function parseRedirect(pi: PodInfo, warn: Warn = () => {}): Redirect {
  const a = pi.annotations;
  const from: Partial<Record<RedirectSetting, string>> = {};
  const get = (setting: RedirectSetting, key: string, dflt: string): string => {
    if (Object.prototype.hasOwnProperty.call(a, key)) {
      from[setting] = src(key);
      return a[key];
    }
    from[setting] = 'default';
    return dflt;
  };

  const modeText = get('mode', Annotation.interceptionMode, 'REDIRECT');
  if (modeText !== 'REDIRECT' && modeText !== 'TPROXY') {
    throw new InputError(src(Annotation.interceptionMode), modeText, 'expected REDIRECT or TPROXY');
  }
  const mode: InterceptionMode = modeText;

  const id = (setting: 'uid' | 'gid', v: number | undefined, field: string): Id => {
    if (v === undefined || v === 0) {
      from[setting] = 'default';
      return DEFAULT_PROXY_ID;
    }
    from[setting] = `istio-proxy securityContext.${field}`;
    return parseId(`istio-proxy securityContext.${field}`, String(v));
  };

  const includeIPCidrs = cidrs(Annotation.includeOutboundIPRanges, get('includeIPCidrs', Annotation.includeOutboundIPRanges, '*'), true);
  const excludeIPCidrs = cidrs(Annotation.excludeOutboundIPRanges, get('excludeIPCidrs', Annotation.excludeOutboundIPRanges, ''), false) as Cidr[];

  const includeInboundPorts = ports(Annotation.includeInboundPorts, get('includeInboundPorts', Annotation.includeInboundPorts, '*'), 'allowed');
  const excludeInbound = ports(
    Annotation.excludeInboundPorts,
    get('excludeInboundPorts', Annotation.excludeInboundPorts, String(STATUS_PORT)),
    `"*" is not supported; to capture no inbound traffic set ${Annotation.includeInboundPorts} to ""`,
  ) as Port[];
  const includeOutboundPorts = ports(
    Annotation.includeOutboundPorts,
    get('includeOutboundPorts', Annotation.includeOutboundPorts, ''),
    `"*" is not supported; to capture all outbound traffic set ${Annotation.includeOutboundIPRanges} to "*"`,
  ) as Port[];
  const excludeOutboundPorts = ports(
    Annotation.excludeOutboundPorts,
    get('excludeOutboundPorts', Annotation.excludeOutboundPorts, String(STATUS_PORT)),
    `"*" is not supported; to capture no outbound traffic set ${Annotation.includeOutboundIPRanges} to ""`,
  ) as Port[];

  const excludeInterfaces = ifNames(Annotation.excludeInterfaces, get('excludeInterfaces', Annotation.excludeInterfaces, ''));
  // The deprecated kubevirtInterfaces key counts only when the new key is absent.
  const rerouteKey = Object.prototype.hasOwnProperty.call(a, Annotation.rerouteVirtualInterfaces)
    ? Annotation.rerouteVirtualInterfaces
    : Annotation.kubevirtInterfaces;
  const rerouteVirtualInterfaces = ifNames(rerouteKey, get('rerouteVirtualInterfaces', rerouteKey, ''));

  const envBool = (setting: 'dnsRedirect' | 'dualStack' | 'invalidDrop', name: string): boolean => {
    const v = pi.proxyEnv.get(name);
    if (v === undefined) {
      from[setting] = 'default';
      return false;
    }
    from[setting] = `istio-proxy env ${name}`;
    const b = parseGoBool(v);
    if (b === undefined) {
      warn(`istio-proxy env ${name}=${JSON.stringify(v)} is not a boolean; treated as false`);
      return false;
    }
    return b;
  };

  from.targetPort = 'default';
  const r: Omit<Redirect, 'from'> = {
    targetPort: DEFAULT_PROXY_PORT,
    mode,
    uid: id('uid', pi.proxyUid, 'runAsUser'),
    gid: id('gid', pi.proxyGid, 'runAsGroup'),
    includeIPCidrs,
    excludeIPCidrs,
    includeInboundPorts,
    excludeInboundPorts: dedup([...excludeInbound, ...ALWAYS_EXCLUDED_INBOUND]),
    includeOutboundPorts,
    excludeOutboundPorts,
    rerouteVirtualInterfaces,
    excludeInterfaces,
    dnsRedirect: envBool('dnsRedirect', ProxyEnv.dnsCapture),
    dualStack: envBool('dualStack', ProxyEnv.dualStack),
    invalidDrop: envBool('invalidDrop', ProxyEnv.invalidDrop),
  };
  return { ...r, from: from as Record<RedirectSetting, string> };
}
