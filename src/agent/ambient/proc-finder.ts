// Opening the netns of pods the ambient agent enrolled, without the runtime's help (Istio's
// podcgroupns_linux.go): the node's processes come from the agent's one /proc walk
// (src/agent/pod-netns.ts: netns, start time, the pod UID its cgroups name); for the pods asked
// about, a process's ns/net is opened. The pairing is accepted only if the namespace holds one of
// the pod's IPs (a process of another pod passing through a netns must not claim it), and when
// several namespaces are found for one pod the oldest process's wins.
import { Logger } from '../../log/logger';
import { IpAddr, formatIp } from '../../net/ip';
import { NodeProcess, scanNodeProcesses } from '../pod-netns';
import { NetnsHandle } from '../../netns/handle';
import { ipKey } from './pods';

export interface FinderOptions {
  /** The host's /proc (as mounted in the agent: /host/proc). */
  readonly procRoot: string;
  readonly log: Logger;
  /** Whether the netns holds any of these addresses (on an interface). */
  readonly holdsAnyAddress: (netns: NetnsHandle, ips: readonly IpAddr[]) => Promise<boolean>;
}

/**
 * Opens the netns of each pod in `wanted` (UID -> the pod's IPs) that a process on the host runs
 * in. Pods without IPs are skipped (ownership cannot be checked yet). The caller owns the
 * returned handles.
 */
export async function findPodNetns(wanted: ReadonlyMap<string, readonly IpAddr[]>, opts: FinderOptions): Promise<Map<string, NetnsHandle>> {
  const out = new Map<string, NetnsHandle>();
  if (wanted.size === 0) return out;
  const claimed = new Set<bigint>();
  for (const proc of scanNodeProcesses(opts.procRoot, (m) => opts.log.debug(m))) {
    let found: NetnsHandle | undefined;
    try {
      found = await examine(proc, claimed, wanted, opts);
    } catch (e) {
      opts.log.debug('skipping process', { pid: proc.pid, error: (e as Error).message });
      continue;
    }
    if (!found) continue;
    const uid = proc.podUid!;
    const prev = out.get(uid);
    if (prev) {
      opts.log.warn('more than one netns for one pod; using the oldest process', { uid });
      if (prev.ownerStarttime <= found.ownerStarttime) {
        found.release();
        continue;
      }
      prev.release();
    }
    out.set(uid, found);
  }
  return out;
}

async function examine(
  proc: NodeProcess,
  claimed: Set<bigint>,
  wanted: ReadonlyMap<string, readonly IpAddr[]>,
  opts: FinderOptions,
): Promise<NetnsHandle | undefined> {
  if (claimed.has(proc.ino) || proc.podUid === undefined) return undefined;
  const ips = wanted.get(proc.podUid);
  if (!ips) return undefined;
  const uid = proc.podUid;
  if (ips.length === 0) {
    opts.log.debug('pod has no IPs yet; cannot check whose netns this is', { uid });
    return undefined;
  }
  const netns = NetnsHandle.open(proc.nsPath, proc.start);
  let owned = false;
  try {
    owned = await opts.holdsAnyAddress(netns, ips);
  } catch (e) {
    opts.log.warn('cannot check the addresses of a netns', { uid, error: (e as Error).message });
    netns.release();
    return undefined;
  }
  if (!owned) {
    opts.log.warn("netns holds none of the pod's IPs; refusing the pairing (a process of another pod may be passing through it)", {
      uid,
      ips: ips.map(formatIp).join(','),
    });
    netns.release();
    return undefined;
  }
  claimed.add(proc.ino);
  return netns;
}

/** The real check: the interface addresses inside the netns, over rtnetlink. */
export async function netnsHoldsAnyAddress(netns: NetnsHandle, ips: readonly IpAddr[]): Promise<boolean> {
  // Loaded on first use: unit tests with a fake check never load netlink or the addon.
  const { withRtnl } = await import('../../netns/rtnl');
  const want = new Set(ips.map(ipKey));
  return withRtnl(netns.path, async (rt) => {
    const addrs = await rt.getAddresses();
    return addrs.some((a) => {
      const b = a.attrs.local ?? a.attrs.address;
      if (!b) return false;
      const ip: IpAddr | undefined =
        b.length === 4 ? { family: 4, bytes: new Uint8Array(b) } : b.length === 16 ? { family: 6, bytes: new Uint8Array(b) } : undefined;
      return ip !== undefined && want.has(ipKey(ip));
    });
  });
}
