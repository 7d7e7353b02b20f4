// The message the CNI plugin sends the node agent for an ambient pod on ADD: `POST /cmdadd` over
// `<cni_agent_run_dir>/pluginevent.sock`, JSON in Istio's layout (Go field names of
// nodeagent.CNIPluginAddEvent, net.IPNet/net.IP as encoding/json writes them):
//
//   {"Netns":"/var/run/netns/cni-…","PodName":"web-1","PodNamespace":"shop",
//    "IPs":[{"Interface":0,"Address":{"IP":"10.244.1.5","Mask":"////AA=="},"Gateway":"10.244.1.1"}]}
//
// Interface is an index or null, Mask the prefix mask's bytes in base64 (4 bytes for IPv4, 16 for
// IPv6), Gateway an address or null; IPs is null when there is no prevResult. Both ends are here:
// the plugin encodes, the agent parses (with the same key matching Go's decoder uses).
import { PrevResult } from '../cni/netconf';
import { JsonObject, field, isObject, jsonType } from '../cni/json';
import { IpAddr, formatIp, parseIp, parsePrefix } from '../net/ip';
import { quote } from '../values/errors';

export const PLUGIN_EVENT_SOCKET = 'pluginevent.sock';
export const CNI_ADD_EVENT_PATH = '/cmdadd';

export interface CniAddEventIp {
  readonly interface: number | null;
  readonly address: IpAddr;
  readonly prefixLength: number;
  readonly gateway: IpAddr | null;
}

export interface CniAddEvent {
  /** The pod's netns as the runtime named it (a host path). */
  readonly netns: string;
  readonly podName: string;
  readonly podNamespace: string;
  readonly ips: readonly CniAddEventIp[];
}

function maskBytes(family: 4 | 6, bits: number): Buffer {
  const b = Buffer.alloc(family === 4 ? 4 : 16);
  for (let i = 0; i < bits; i++) b[i >> 3] |= 0x80 >> (i & 7);
  return b;
}

/** The event for an ADD, with the addresses of the chained plugins' prevResult. */
export function eventFromPrevResult(netns: string, podName: string, podNamespace: string, prev: PrevResult | undefined): CniAddEvent {
  const ips = (prev?.ips ?? []).map((ip): CniAddEventIp => {
    const p = parsePrefix(ip.address)!; // validated when prevResult was parsed
    return {
      interface: ip.interface ?? null,
      address: p.addr,
      prefixLength: p.bits,
      gateway: ip.gateway ? (parseIp(ip.gateway) ?? null) : null,
    };
  });
  return { netns, podName, podNamespace, ips };
}

/** The JSON body, byte for byte as Go's json.Marshal writes CNIPluginAddEvent. */
export function encodeCniAddEvent(e: CniAddEvent): string {
  const ips =
    e.ips.length === 0
      ? null
      : e.ips.map((ip) => ({
          Interface: ip.interface,
          Address: { IP: formatIp(ip.address), Mask: maskBytes(ip.address.family, ip.prefixLength).toString('base64') },
          Gateway: ip.gateway ? formatIp(ip.gateway) : null,
        }));
  return JSON.stringify({ Netns: e.netns, PodName: e.podName, PodNamespace: e.podNamespace, IPs: ips });
}

export class CniEventError extends Error {
  override readonly name = 'CniEventError';
}

function str(o: JsonObject, key: string): string {
  const v = field(o, key);
  if (v === undefined) return '';
  if (typeof v !== 'string') throw new CniEventError(`${key}: expected a string, got ${jsonType(v)}`);
  return v;
}

/** Parses an event body as Go's decoder would accept it (keys case-insensitive, null = absent). */
export function parseCniAddEvent(body: string): CniAddEvent {
  if (body.trim() === '') throw new CniEventError('empty request body');
  let o: unknown;
  try {
    o = JSON.parse(body);
  } catch (e) {
    throw new CniEventError(`not JSON: ${quote((e as Error).message).slice(1, -1)}`);
  }
  if (!isObject(o)) throw new CniEventError(`expected a JSON object, got ${jsonType(o)}`);
  const netns = str(o, 'Netns');
  if (netns !== '' && (!netns.startsWith('/') || netns.includes('\0') || netns.split('/').includes('..'))) {
    throw new CniEventError(`Netns ${quote(netns)}: expected an absolute path without ".."`);
  }
  const list = field(o, 'IPs') ?? [];
  if (!Array.isArray(list)) throw new CniEventError(`IPs: expected a list, got ${jsonType(list)}`);
  const ips = list.map((x, i): CniAddEventIp => {
    if (!isObject(x)) throw new CniEventError(`IPs[${i}]: expected an object`);
    const iface = field(x, 'Interface');
    if (iface !== undefined && (typeof iface !== 'number' || !Number.isInteger(iface))) {
      throw new CniEventError(`IPs[${i}].Interface: expected an integer or null`);
    }
    const addr = field(x, 'Address');
    if (!isObject(addr)) throw new CniEventError(`IPs[${i}].Address: expected an object`);
    const ipText = str(addr, 'IP');
    const ip = parseIp(ipText);
    if (!ip) throw new CniEventError(`IPs[${i}].Address.IP: ${quote(ipText)} is not an IP address`);
    const maskText = str(addr, 'Mask');
    const mask = Buffer.from(maskText, 'base64');
    // Buffer's base64 decoder skips junk; insist on a canonical mask of the address's size
    // (ones then zeros), or the prefix length would be anything (a 20-byte mask: /160 on IPv4).
    const maskBits = [...mask].map((b) => b.toString(2).padStart(8, '0')).join('');
    // An absent mask (Go's nil IPMask) is accepted: the agent uses only the address.
    if (maskText !== '' && (mask.toString('base64') !== maskText || mask.length !== (ip.family === 4 ? 4 : 16) || !/^1*0*$/.test(maskBits))) {
      throw new CniEventError(`IPs[${i}].Address.Mask: ${quote(maskText)} is not an IPv${ip.family} prefix mask`);
    }
    const bits = maskText === '' ? (ip.family === 4 ? 32 : 128) : maskBits.indexOf('0') === -1 ? maskBits.length : maskBits.indexOf('0');
    const gwText = str(x, 'Gateway');
    const gateway = gwText === '' ? null : (parseIp(gwText) ?? null);
    if (gwText !== '' && !gateway) throw new CniEventError(`IPs[${i}].Gateway: ${quote(gwText)} is not an IP address`);
    return { interface: iface === undefined ? null : (iface as number), address: ip, prefixLength: bits, gateway };
  });
  return { netns, podName: str(o, 'PodName'), podNamespace: str(o, 'PodNamespace'), ips };
}
