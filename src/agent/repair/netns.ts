// Finding a running pod's network namespace from the node's /proc (mounted at /host/proc in the
// agent's container), for the repair controller. Kubernetes does not tell us where the netns
// is bound (each runtime puts it somewhere else), so, like Istio:
// - every process's ns/net is stat'ed; the host's netns (that of pid 1) and the agent's own are
//   never candidates, so rules can never land on the node itself; processes sharing a netns are
//   grouped;
// - a netns is the pod's only if one of its interfaces holds one of the pod's IPs;
// - when several processes qualify, the oldest (the pause/sandbox process, which outlives the
//   crash-looping validation container) names the path returned.
// In addition (from Istio's ambient pod-netns finder), netns whose processes' cgroup paths name
// the pod's UID are checked first; the IP check is still required for them. Without a cgroup
// match (runtimes that do not put the UID in the path, cgroup namespaces) every other netns is
// checked by IP, which is what Istio's repair controller does.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Pod, podIPs } from '../../kube/pod';
import { formatIp } from '../../net/ip';

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
  ino: bigint;
  dev: bigint;
  oldestPid: number;
  oldestStart: bigint;
  uids: Set<string>;
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks), read after the last ')'. */
export function parseStartTime(stat: string): bigint | undefined {
  const i = stat.lastIndexOf(')');
  if (i < 0) return undefined;
  const f = stat.slice(i + 1).trim().split(/\s+/);
  // f[0] is field 3 (state), so field 22 is f[19].
  return f.length >= 20 && /^\d+$/.test(f[19]) ? BigInt(f[19]) : undefined;
}

const HEX = '[0-9a-fA-F]';
const SEP = '[-_]?';
// "pod" + a UID whose groups may be separated by '-' (cgroupfs) or '_' (systemd), then a separator.
const POD_UID_RE = new RegExp(`[^0-9a-zA-Z]pod(${HEX}{8}${SEP}${HEX}{4}${SEP}${HEX}{4}${SEP}${HEX}{4}${SEP}${HEX}{12})(?=[^0-9a-zA-Z]|$)`, 'g');

/** The pod UIDs named in a /proc/<pid>/cgroup file, canonical (dash-separated, lower case). */
export function cgroupPodUIDs(cgroupFile: string): Set<string> {
  const uids = new Set<string>();
  for (const line of cgroupFile.split('\n')) {
    const parts = line.split(':');
    if (parts.length < 3) continue;
    const p = parts.slice(2).join(':').replace(/\.scope$/, '');
    for (const m of p.matchAll(POD_UID_RE)) {
      const hex = m[1].replace(/[-_]/g, '').toLowerCase();
      uids.add(`${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`);
    }
  }
  return uids;
}

async function statNs(p: string): Promise<fs.BigIntStats | undefined> {
  try {
    return await fs.promises.stat(p, { bigint: true });
  } catch {
    return undefined;
  }
}

async function readText(p: string): Promise<string | undefined> {
  try {
    return await fs.promises.readFile(p, 'utf8');
  } catch {
    return undefined;
  }
}

/** Groups the processes under procRoot by netns, leaving out the host's and our own. */
async function scanProcs(procRoot: string, debug?: (msg: string) => void): Promise<NetnsGroup[]> {
  let names: string[];
  try {
    names = await fs.promises.readdir(procRoot);
  } catch (e) {
    throw new Error(`cannot read ${procRoot} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): is the node's /proc mounted at ${procRoot}?`);
  }
  // The node's netns is pid 1's (as upstream). Our own is excluded as well: on a node the agent
  // runs in the host netns anyway, and where pid 1 cannot be inspected (a sandbox that denies
  // it) the agent's netns is still never a candidate.
  const pid1 = await statNs(path.join(procRoot, '1', 'ns', 'net'));
  if (!pid1) debug?.(`cannot stat ${path.join(procRoot, '1', 'ns', 'net')}; excluding only this process's own netns`);
  const excluded = [pid1, await statNs('/proc/self/ns/net')].filter((x): x is fs.BigIntStats => x !== undefined);
  if (excluded.length === 0) throw new Error('cannot tell the host network namespace: neither pid 1 nor this process has a readable ns/net');
  const groups = new Map<string, NetnsGroup>();
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    const dir = path.join(procRoot, name);
    const st = await statNs(path.join(dir, 'ns', 'net'));
    if (!st || excluded.some((h) => h.ino === st.ino && h.dev === st.dev)) continue;
    const start = parseStartTime((await readText(path.join(dir, 'stat'))) ?? '');
    if (start === undefined) continue; // the process went away, or this is not a procfs entry
    const uids = cgroupPodUIDs((await readText(path.join(dir, 'cgroup'))) ?? '');
    const id = `${st.dev}:${st.ino}`;
    const pid = Number(name);
    const g = groups.get(id);
    if (!g) {
      groups.set(id, { ino: st.ino, dev: st.dev, oldestPid: pid, oldestStart: start, uids });
      continue;
    }
    for (const u of uids) g.uids.add(u);
    if (start < g.oldestStart || (start === g.oldestStart && pid < g.oldestPid)) {
      g.oldestPid = pid;
      g.oldestStart = start;
    }
  }
  return [...groups.values()];
}

/** The pod's netns under procRoot; rejects when it has no IP or no netns holds one of its IPs. */
export async function findPodNetns(pod: Pod, o: NetnsFinderOptions): Promise<FoundNetns> {
  const ips = podIPs(pod).map(formatIp);
  if (ips.length === 0) throw new Error('the pod has no IP in its status yet');
  const uid = (pod.metadata?.uid ?? '').toLowerCase();
  const groups = await scanProcs(o.procRoot, o.debug);
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
  for (const [candidates, via] of [[byCgroup, 'cgroup+ip'], [rest, 'ip']] as const) {
    let best: NetnsGroup | undefined;
    for (const g of candidates) {
      if (!(await holdsIp(g))) continue;
      if (!best || g.oldestStart < best.oldestStart) best = g;
    }
    if (best) return { path: path.join(o.procRoot, String(best.oldestPid), 'ns', 'net'), pid: best.oldestPid, via };
  }
  throw new Error(`no network namespace under ${o.procRoot} holds the pod's IP ${ips.join(', ')}`);
}
