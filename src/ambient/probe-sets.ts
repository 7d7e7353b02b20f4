// The host's probe address sets: `inet istio-ambient-nat` sets `<prefix>-v4` (ipv4_addr) and,
// with IPv6 on, `<prefix>-v6` (ipv6_addr). Each element is an enrolled pod's address with the
// pod UID as its comment; the host rule SNATs kubelet's probes to those addresses.
//
// These transactions change the sets in place: apply them with applyNft(netns, render(tx)),
// never with applyTransaction, which replaces every table a transaction touches (and so would
// drop the sets' elements and the host rule).
import { IpAddr, formatIp, unmap } from '../net/ip';

export { unmap } from '../net/ip';
import { Op, Transaction } from '../nft/transaction';
import { NftName, PodUid } from '../values/typed';
import { NAT, PROBE_SET_COMMENT, PROBE_SET_PREFIX } from './tables';

export interface ProbeSets {
  /** Set name prefix (`istio-inpod-probes`). */
  readonly prefix: NftName | typeof PROBE_SET_PREFIX;
  /** AMBIENT_IPV6: whether the -v6 set exists and IPv6 addresses are kept. */
  readonly ipv6: boolean;
}

const where = { family: 'inet', table: NAT } as const;

export const probeSetName = (s: ProbeSets, family: 4 | 6): string => `${s.prefix}-v${family}`;

/** The table and the sets; adding an existing set is no error and keeps its elements. */
export function createProbeSets(s: ProbeSets): Transaction {
  const ops: Op[] = [
    { verb: 'add', kind: 'table', ...where },
    { verb: 'add', kind: 'set', ...where, set: probeSetName(s, 4), type: 'ipv4_addr', comment: PROBE_SET_COMMENT },
  ];
  if (s.ipv6) ops.push({ verb: 'add', kind: 'set', ...where, set: probeSetName(s, 6), type: 'ipv6_addr', comment: PROBE_SET_COMMENT });
  return ops;
}

/** The set an address belongs in, or undefined for IPv6 when IPv6 is off (Istio skips those). */
function target(s: ProbeSets, ip: IpAddr): { set: string; key: string } | undefined {
  const a = unmap(ip);
  if (a.family === 6 && !s.ipv6) return undefined;
  return { set: probeSetName(s, a.family), key: formatIp(a) };
}

/**
 * Adds a pod address with its UID as comment. An address already present keeps its old comment
 * (the kernel leaves an existing element alone); remove it first to re-own it. Empty when the
 * address is IPv6 and IPv6 is off.
 */
export function addProbeAddress(s: ProbeSets, ip: IpAddr, podUid: PodUid): Transaction {
  const t = target(s, ip);
  return t ? [{ verb: 'add', kind: 'element', ...where, set: t.set, key: [t.key], comment: podUid }] : [];
}

/** Removes a pod address; fails when it is absent. Empty when the address is IPv6 and IPv6 is off. */
export function deleteProbeAddress(s: ProbeSets, ip: IpAddr): Transaction {
  const t = target(s, ip);
  return t ? [{ verb: 'delete', kind: 'element', ...where, set: t.set, key: [t.key] }] : [];
}

/** Empties the sets (the agent does this at start, then re-adds the pods it knows). */
export function flushProbeSets(s: ProbeSets): Transaction {
  const ops: Op[] = [{ verb: 'flush', kind: 'set', ...where, set: probeSetName(s, 4) }];
  if (s.ipv6) ops.push({ verb: 'flush', kind: 'set', ...where, set: probeSetName(s, 6) });
  return ops;
}

/** Removes the whole host table, sets and host rule included; absent is no error. */
export function destroyProbeSets(): Transaction {
  return [
    { verb: 'add', kind: 'table', ...where },
    { verb: 'delete', kind: 'table', ...where },
  ];
}
