// Finding a running pod's network namespace from the node's /proc (mounted at /host/proc in the
// agent's container), for the repair controller. Kubernetes does not tell us where the netns
// is bound (each runtime puts it somewhere else), so, like Istio:
// - the node's processes (src/agent/pod-netns.ts, the walk ambient uses too: never the host's
//   netns or the agent's) are grouped by netns;
// - a netns is the pod's only if one of its interfaces holds one of the pod's IPs;
// - when several processes qualify, the oldest (the pause/sandbox process, which outlives the
//   crash-looping validation container) names the path returned.
// In addition (from Istio's ambient pod-netns finder), netns whose processes' cgroup paths name
// the pod's UID are checked first; the IP check is still required for them. Without a cgroup
// match (runtimes that do not put the UID in the path, cgroup namespaces) every other netns is
// checked by IP, which is what Istio's repair controller does.
import * as path from 'node:path';
import { Pod, podIPs } from '../../kube/pod';
import { formatIp } from '../../net/ip';
import { scanNodeProcesses } from '../pod-netns';

export interface NetnsProbe {
  /** The IP addresses (canonical text) on the interfaces of the netns at `nsPath`. */
  addressesIn(nsPath: string): Promise<string[]>;
}

export interface NetnsFinderOptions {
  /** The node's procfs as mounted here (Istio: /host/proc). */
  procRoot: string;
  probe: NetnsProbe;
  /** Told about candidates that could not be checked. */
  debug?: (msg: string) => void;
}

export interface FoundNetns {
  /** <procRoot>/<pid>/ns/net of the oldest process in the pod's netns. */
  path: string;
  pid: number;
  /** How the netns was found. */
  via: 'cgroup+ip' | 'ip';
}

interface NetnsGroup {
  oldestPid: number;
  oldestStart: bigint;
  uids: Set<string>;
}

/** The processes of src/agent/pod-netns.ts grouped by netns. */
function netnsGroups(procRoot: string, debug?: (msg: string) => void): NetnsGroup[] {
  const groups = new Map<string, NetnsGroup>();
  for (const p of scanNodeProcesses(procRoot, debug)) {
    const id = `${p.dev}:${p.ino}`;
    const g = groups.get(id) ?? { oldestPid: p.pid, oldestStart: p.start, uids: new Set<string>() };
    groups.set(id, g);
    if (p.podUid) g.uids.add(p.podUid);
    if (p.start < g.oldestStart || (p.start === g.oldestStart && p.pid < g.oldestPid)) {
      g.oldestPid = p.pid;
      g.oldestStart = p.start;
    }
  }
  return [...groups.values()];
}

/** The pod's netns under procRoot; rejects when it has no IP or no netns holds one of its IPs. */
export async function findPodNetns(pod: Pod, o: NetnsFinderOptions): Promise<FoundNetns> {
  const ips = podIPs(pod).map(formatIp);
  if (ips.length === 0) throw new Error('the pod has no IP in its status yet');
  const uid = (pod.metadata?.uid ?? '').toLowerCase();
  const groups = netnsGroups(o.procRoot, o.debug);
  const byCgroup = groups.filter((g) => uid !== '' && g.uids.has(uid));
  const rest = groups.filter((g) => !byCgroup.includes(g));
  const holdsIp = async (g: NetnsGroup): Promise<boolean> => {
    const p = path.join(o.procRoot, String(g.oldestPid), 'ns', 'net');
    try {
      const addrs = await o.probe.addressesIn(p);
      return addrs.some((a) => ips.includes(a));
    } catch (e) {
      o.debug?.(`cannot read the addresses in ${p}: ${(e as Error).message}`);
      return false;
    }
  };
  for (const [candidates, via] of [
    [byCgroup, 'cgroup+ip'],
    [rest, 'ip'],
  ] as const) {
    let best: NetnsGroup | undefined;
    for (const g of candidates) {
      if (!(await holdsIp(g))) continue;
      if (!best || g.oldestStart < best.oldestStart) best = g;
    }
    if (best) return { path: path.join(o.procRoot, String(best.oldestPid), 'ns', 'net'), pid: best.oldestPid, via };
  }
  throw new Error(`no network namespace under ${o.procRoot} holds the pod's IP ${ips.join(', ')}`);
}
