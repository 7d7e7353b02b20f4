// Typed values parsed once at the boundary. Rule builders only ever see these, so an outside
// string can never put nft syntax into a rule.
import { IpAddr, IpPrefix, formatIp, formatPrefix, isLoopback, parseIPv4, parseIPv6, parsePrefix } from '../net/ip';
import { InputError } from './errors';

declare const brand: unique symbol;
type Brand<T, B extends string> = T & { readonly [brand]: B };

export type Port = Brand<number, 'Port'>;
/** Numeric UID or GID. */
export type Id = Brand<number, 'Id'>;
/** A mark or route table number (u32). */
export type U32 = Brand<number, 'U32'>;
/** An interface name the kernel would accept. */
export type IfName = Brand<string, 'IfName'>;
/** A numeric GID or a group name as `groupadd` allows it. */
export type Group = Brand<string, 'Group'>;

export interface Cidr {
  readonly prefix: IpPrefix;
  /** netip.Prefix.String(): what goes into rule text. */
  readonly text: string;
}

/** An IP address kept as the user wrote it (Istio pastes DNS servers in verbatim), once validated. */
export interface IpText {
  readonly addr: IpAddr;
  readonly text: string;
}

export type InterceptionMode = 'REDIRECT' | 'TPROXY';

/** Split a comma list as Istio does (empty items dropped); we also trim blanks around items. */
export function splitList(s: string): string[] {
  return s
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');
}

export function parsePort(source: string, s: string): Port {
  if (!/^[0-9]{1,5}$/.test(s.trim())) throw new InputError(source, s, 'expected a port number 1-65535');
  const n = Number(s.trim());
  if (n < 1 || n > 65535) throw new InputError(source, s, 'port out of range 1-65535');
  return n as Port;
}

export function parsePortList(source: string, s: string): Port[] {
  return splitList(s).map((p) => parsePort(source, p));
}

/** `*` means every port; otherwise a list (possibly empty). */
export function parsePortSelection(source: string, s: string): '*' | Port[] {
  return s.trim() === '*' ? '*' : parsePortList(source, s);
}

function parseUnsigned(source: string, s: string, what: string): number {
  const t = s.trim();
  let n: number;
  if (/^[0-9]{1,10}$/.test(t)) n = Number(t);
  else if (/^0x[0-9a-fA-F]{1,8}$/.test(t)) n = parseInt(t.slice(2), 16);
  else throw new InputError(source, s, `expected ${what}`);
  if (n > 0xffffffff) throw new InputError(source, s, `${what} out of range`);
  return n;
}

export function parseU32(source: string, s: string): U32 {
  return parseUnsigned(source, s, 'an unsigned 32-bit number') as U32;
}

export function parseId(source: string, s: string): Id {
  const t = s.trim();
  if (!/^[0-9]{1,10}$/.test(t) || Number(t) > 0xfffffffe) {
    throw new InputError(source, s, 'expected a numeric UID/GID (0-4294967294)');
  }
  return Number(t) as Id;
}

export function parseIdList(source: string, s: string): Id[] {
  const ids = splitList(s).map((x) => parseId(source, x));
  if (ids.length === 0) throw new InputError(source, s, 'expected at least one numeric UID/GID');
  return ids;
}

export function parseGroup(source: string, s: string): Group {
  const t = s.trim();
  if (/^[0-9]{1,10}$/.test(t) && Number(t) <= 0xfffffffe) return t as Group;
  // The shadow-utils name rule: starts with a letter or _, then letters, digits, _, - (trailing $ allowed).
  if (/^[a-zA-Z_][a-zA-Z0-9_-]{0,30}\$?$/.test(t)) return t as Group;
  throw new InputError(source, s, 'expected a numeric GID or a group name');
}

export function parseGroupSelection(source: string, s: string): '*' | Group[] {
  return s.trim() === '*' ? '*' : splitList(s).map((g) => parseGroup(source, g));
}

export function parseIfName(source: string, s: string): IfName {
  // The kernel's dev_valid_name(): 1-15 bytes, not "." or "..", no '/', ':' or whitespace.
  // We also refuse characters nft would read as syntax, so the name is always a plain word.
  if (s.length < 1 || s.length > 15) throw new InputError(source, s, 'interface names are 1-15 characters');
  if (s === '.' || s === '..') throw new InputError(source, s, 'not a valid interface name');
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(s)) {
    throw new InputError(source, s, 'interface names may hold only letters, digits and "_.-"');
  }
  return s as IfName;
}

export function parseIfNameList(source: string, s: string): IfName[] {
  return splitList(s).map((x) => parseIfName(source, x));
}

export function parseCidr(source: string, s: string): Cidr {
  const prefix = parsePrefix(s.trim());
  if (!prefix) throw new InputError(source, s, 'expected a CIDR such as 10.0.0.0/8 or fd00::/64');
  return { prefix, text: formatPrefix(prefix) };
}

/** `*` means everything; otherwise a list of v4/v6 CIDRs. */
export function parseCidrSelection(source: string, s: string): '*' | Cidr[] {
  return s.trim() === '*' ? '*' : splitList(s).map((c) => parseCidr(source, c));
}

export function parseIpText(source: string, s: string, family: 4 | 6): IpText {
  const t = s.trim();
  const addr = family === 4 ? parseIPv4(t) : parseIPv6(t);
  if (!addr) throw new InputError(source, s, `expected an IPv${family} address`);
  return { addr, text: t };
}

export function parseInterceptionMode(source: string, s: string): InterceptionMode {
  // Istio treats anything but TPROXY as REDIRECT; we accept only the two names (and "" = REDIRECT).
  const t = s.trim();
  if (t === '' || t === 'REDIRECT') return 'REDIRECT';
  if (t === 'TPROXY') return 'TPROXY';
  throw new InputError(source, s, 'expected REDIRECT or TPROXY');
}

export function parseIPv4LoopbackCidr(source: string, s: string): Cidr {
  const c = parseCidr(source, s);
  if (c.prefix.addr.family !== 4 || !isLoopback(c.prefix.addr)) {
    throw new InputError(source, s, 'expected an IPv4 loopback CIDR (127.0.0.0/8)');
  }
  if (c.prefix.bits < 8) throw new InputError(source, s, 'mask must be between /8 and /32');
  return c;
}

export function ipString(a: IpAddr): string {
  return formatIp(a);
}

/** An IP address of one family, with its canonical text (netip.Addr.String()) for rule text. */
export interface IpAddress {
  readonly addr: IpAddr;
  /** RFC 5952 for IPv6, dotted quad for IPv4: what Istio's goldens print. */
  readonly text: string;
}

/** One address of the given family; the text is normalised (`fd16:0::1` -> `fd16::1`). */
export function parseIpAddress(source: string, s: string, family: 4 | 6): IpAddress {
  const t = s.trim();
  const addr = family === 4 ? parseIPv4(t) : parseIPv6(t);
  if (!addr) throw new InputError(source, s, `expected an IPv${family} address`);
  return { addr, text: formatIp(addr) };
}

/** The name of an nft object (table, chain, set) that nft reads as a plain identifier. */
export type NftName = Brand<string, 'NftName'>;

/**
 * nft's identifier rule (a letter or "_" first, then letters, digits and "_.-"; we leave out the
 * "/" and leading "." nft also takes), and at most `max` characters (sets: 255 in the kernel,
 * less whatever suffix the caller adds).
 */
export function parseNftName(source: string, s: string, max = 255): NftName {
  if (s.length < 1 || s.length > max) throw new InputError(source, s, `names are 1-${max} characters`);
  if (!/^[A-Za-z_][A-Za-z0-9_.-]*$/.test(s)) {
    throw new InputError(source, s, 'names start with a letter or "_" and hold only letters, digits and "_.-"');
  }
  return s as NftName;
}

/** A Kubernetes pod UID (in practice an RFC 4122 UUID), safe to write as an nft comment. */
export type PodUid = Brand<string, 'PodUid'>;

export function parsePodUid(source: string, s: string): PodUid {
  // nft comments hold at most 128 bytes and nft's scanner has no escapes for quotes.
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(s)) {
    throw new InputError(source, s, 'expected a pod UID (letters, digits and "._-", at most 128 characters)');
  }
  return s as PodUid;
}
