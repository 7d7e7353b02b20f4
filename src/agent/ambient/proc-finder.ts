// Finding a running pod's network namespace without the runtime's help (Istio's
// podcgroupns_linux.go): walk the host's /proc; for each process whose netns is neither the host's
// nor one already claimed, read its cgroups, pull the pod UID out of the cgroup path (kubelet
// names pod cgroups ".../pod<uid>/<container id>" or ".../kubepods-...-pod<uid>.slice/cri-...-<id>.scope"),
// and, for the pods asked about, open that process's ns/net. The pairing is accepted only if the
// namespace holds one of the pod's IPs (a process of another pod passing through a netns must not
// claim it), and when several namespaces are found for one pod the oldest process's wins.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Logger } from '../../log/logger';
import { IpAddr, formatIp } from '../../net/ip';
import { NetnsHandle } from '../../netns/handle';
import { ipKey } from './pods';

// ASCII punctuation, as RE2's [[:punct:]], and its complement.
const P = '[!-\\/:-@\\[-`{-~]';
const NP = '[^!-\\/:-@\\[-`{-~]';
const UUID = `[0-9A-Fa-f]{8}${P}?[0-9A-Fa-f]{4}${P}?[0-9A-Fa-f]{4}${P}?[0-9A-Fa-f]{4}${P}?[0-9A-Fa-f]{12}`;

/** kubelet's pod cgroups (cgroupfs and systemd drivers): a pod UID, then the container ID last. */
const WITH_UID = new RegExp(`${P}pod(${UUID})${P}(?:${NP}+${P})*(${NP}+)$`);
// CRI-O without a pod UID in the path (e.g. KubeEdge): "...crio-<id>". The optional first group
// must NOT match, or the path is the first form's. Upstream repeats "non-punctuation, then
// slashes" as a nested repetition, which RE2 runs in linear time but a backtracking engine would
// not; one repetition of "a non-punctuation character or a slash" matches the same strings.
const CRIO_NO_UID = new RegExp(`(pod${UUID}${P})?(?:${NP}|/)*crio${P}(${NP}+)$`);

// Characters Go's unicode.IsPunct says yes to among ASCII punctuation ($+<=>^`|~ are symbols).
const GO_PUNCT = new Set('!"#%&\'()*,-./:;?@[\\]_{}'.split(''));

function canonicalUid(s: string): string {
  return [...s].map((c) => (GO_PUNCT.has(c) ? '-' : c)).join('');
}

/** Pod UID ('' when the path names none) and container ID from one cgroup path, or undefined. */
export function parseCgroupPath(cgroupPath: string): { uid: string; containerId: string } | undefined {
  const p = cgroupPath.endsWith('.scope') ? cgroupPath.slice(0, -'.scope'.length) : cgroupPath;
  const found: { uid: string; containerId: string }[] = [];
  const a = WITH_UID.exec(p);
  if (a) found.push({ uid: canonicalUid(a[1]), containerId: a[2] });
  const b = CRIO_NO_UID.exec(p);
  if (b && b[1] === undefined) found.push({ uid: '', containerId: b[2] });
  return found.length === 1 ? found[0] : undefined;
}

/**
 * The pod UID and container ID a process belongs to, from its /proc/<pid>/cgroup text
 * ("hierarchy:controllers:path" lines). Undefined when no line names a pod container; throws when
 * the lines disagree or a line is malformed.
 */
export function podFromCgroups(text: string): { uid: string; containerId: string } | undefined {
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  let found: { uid: string; containerId: string } | undefined;
  for (const line of lines) {
    const a = line.indexOf(':');
    const b = a < 0 ? -1 : line.indexOf(':', a + 1);
    if (b < 0) throw new Error(`cgroup line ${JSON.stringify(line)} is not hierarchy:controllers:path`);
    const r = parseCgroupPath(line.slice(b + 1));
    if (!r) continue;
    if (!found || found.containerId === '') {
      found = r;
    } else if (found.containerId !== r.containerId) {
      throw new Error(`several container IDs in one process's cgroups (${found.containerId}, ${r.containerId})`);
    } else if (found.uid !== r.uid) {
      throw new Error(`several pod UIDs in one process's cgroups (${found.uid}, ${r.uid})`);
    }
  }
  return found;
}

/** Field 22 of /proc/<pid>/stat (clock ticks after boot), read after the command name's last ')'. */
export function parseStarttime(stat: string): bigint {
  const i = stat.lastIndexOf(')');
  if (i < 0) throw new Error('invalid stat format');
  const fields = stat.slice(i + 1).trim().split(/\s+/);
  if (fields.length < 20) throw new Error('not enough fields in stat');
  return BigInt(fields[19]);
}

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
  const host = hostNetnsStat(opts);
  const claimed = new Set<bigint>();
  const entries = fs.readdirSync(opts.procRoot, { withFileTypes: true }).filter((e) => /^[0-9]+$/.test(e.name));
  for (const entry of entries) {
    // /proc lists processes as directories; a fake /proc in tests may use symlinks to them.
    if (!entry.isDirectory() && !entry.isSymbolicLink()) continue;
    const dir = path.join(opts.procRoot, entry.name);
    let found: { uid: string; netns: NetnsHandle } | undefined;
    try {
      found = await examine(dir, host, claimed, wanted, opts);
    } catch (e) {
      opts.log.debug('skipping process', { pid: entry.name, error: (e as Error).message });
      continue;
    }
    if (!found) continue;
    const prev = out.get(found.uid);
    if (prev) {
      opts.log.warn('more than one netns for one pod; using the oldest process', { uid: found.uid });
      if (prev.ownerStarttime <= found.netns.ownerStarttime) {
        found.netns.release();
        continue;
      }
      prev.release();
    }
    out.set(found.uid, found.netns);
  }
  return out;
}

/**
 * The host's netns, as PID 1's (upstream). Where PID 1 may not be inspected (a non-dumpable init
 * in some sandboxes) the agent's own netns stands in: the agent runs with hostNetwork.
 */
function hostNetnsStat(opts: FinderOptions): fs.BigIntStats {
  const init = path.join(opts.procRoot, '1', 'ns', 'net');
  try {
    return fs.statSync(init, { bigint: true });
  } catch (e) {
    opts.log.debug(`cannot stat ${init}; using the agent's own netns as the host's`, { error: (e as Error).message });
    return fs.statSync('/proc/self/ns/net', { bigint: true });
  }
}

async function examine(
  dir: string,
  host: fs.BigIntStats,
  claimed: Set<bigint>,
  wanted: ReadonlyMap<string, readonly IpAddr[]>,
  opts: FinderOptions,
): Promise<{ uid: string; netns: NetnsHandle } | undefined> {
  const nsPath = path.join(dir, 'ns', 'net');
  const st = fs.statSync(nsPath, { bigint: true });
  const starttime = parseStarttime(fs.readFileSync(path.join(dir, 'stat'), 'utf8'));
  if (st.ino === host.ino && st.dev === host.dev) return undefined;
  if (claimed.has(st.ino)) return undefined;
  let cgroups: string;
  try {
    cgroups = fs.readFileSync(path.join(dir, 'cgroup'), 'utf8');
  } catch {
    return undefined;
  }
  const pod = podFromCgroups(cgroups);
  if (!pod) return undefined;
  const ips = wanted.get(pod.uid);
  if (!ips) return undefined;
  const netns = NetnsHandle.open(nsPath, starttime);
  if (ips.length === 0) {
    opts.log.debug('pod has no IPs yet; cannot check whose netns this is', { uid: pod.uid });
    netns.release();
    return undefined;
  }
  let owned = false;
  try {
    owned = await opts.holdsAnyAddress(netns, ips);
  } catch (e) {
    opts.log.warn('cannot check the addresses of a netns', { uid: pod.uid, error: (e as Error).message });
    netns.release();
    return undefined;
  }
  if (!owned) {
    opts.log.warn("netns holds none of the pod's IPs; refusing the pairing (a process of another pod may be passing through it)", {
      uid: pod.uid,
      ips: ips.map(formatIp).join(','),
    });
    netns.release();
    return undefined;
  }
  claimed.add(st.ino);
  return { uid: pod.uid, netns };
}

/** The real check: the interface addresses inside the netns, over rtnetlink. */
export async function netnsHoldsAnyAddress(netns: NetnsHandle, ips: readonly IpAddr[]): Promise<boolean> {
  // Loaded on first use: unit tests with a fake check never load netlink or the addon.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { withRtnl } = require('../../netns/rtnl') as typeof import('../../netns/rtnl');
  const want = new Set(ips.map(ipKey));
  return withRtnl(netns.path, async (rt) => {
    const addrs = await rt.getAddresses();
    return addrs.some((a) => {
      const b = a.attrs.local ?? a.attrs.address;
      if (!b) return false;
      const ip: IpAddr | undefined = b.length === 4 ? { family: 4, bytes: new Uint8Array(b) } : b.length === 16 ? { family: 6, bytes: new Uint8Array(b) } : undefined;
      return ip !== undefined && want.has(ipKey(ip));
    });
  });
}
