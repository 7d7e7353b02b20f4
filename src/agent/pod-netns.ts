// The one way the agent finds pods' network namespaces without the runtime's help: walk the
// node's /proc (mounted at /host/proc in the agent's container), and for each process read its
// netns identity (device, inode), its start time and the pod UID its cgroup path names (kubelet
// names pod cgroups ".../pod<uid>/<container id>" or ".../kubepods-...-pod<uid>.slice/cri-...-<id>.scope";
// the parser is Istio's podcgroupns_linux.go). The node's own netns (pid 1's) and the agent's
// are never candidates, so rules can never land on the node itself.
// Its two users decide ownership by the pod's IPs: repair (repair/netns.ts: one pod, by cgroup
// then by IP alone, the path of the oldest process) and ambient (ambient/proc-finder.ts: many
// pods by UID, opened as handles).
import * as fs from 'node:fs';
import * as path from 'node:path';

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

/** The UID as upstream canonicalizes it: every punctuation character becomes '-'. */
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
export function parseStartTime(stat: string): bigint | undefined {
  const i = stat.lastIndexOf(')');
  if (i < 0) return undefined;
  const f = stat
    .slice(i + 1)
    .trim()
    .split(/\s+/);
  // f[0] is field 3 (state), so field 22 is f[19].
  return f.length >= 20 && /^\d+$/.test(f[19]) ? BigInt(f[19]) : undefined;
}

/** One process of the node outside the host's netns. */
export interface NodeProcess {
  readonly pid: number;
  /** <procRoot>/<pid>/ns/net */
  readonly nsPath: string;
  readonly dev: bigint;
  readonly ino: bigint;
  /** Start time in clock ticks: the oldest process of a netns is its sandbox (pause). */
  readonly start: bigint;
  /** The pod UID its cgroups name, canonical lower case; undefined when none (or unreadable). */
  readonly podUid?: string;
}

function statNs(p: string): fs.BigIntStats | undefined {
  try {
    return fs.statSync(p, { bigint: true });
  } catch {
    return undefined;
  }
}

function readText(p: string): string | undefined {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * The node's processes outside its own netns (pid 1's) and the agent's, in /proc order.
 * Processes that go away or cannot be read meanwhile are left out (told to `debug`).
 */
export function scanNodeProcesses(procRoot: string, debug?: (msg: string) => void): NodeProcess[] {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(procRoot, { withFileTypes: true });
  } catch (e) {
    throw new Error(`cannot read ${procRoot} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): is the node's /proc mounted at ${procRoot}?`);
  }
  const pid1Ns = path.join(procRoot, '1', 'ns', 'net');
  const pid1 = statNs(pid1Ns);
  // Where pid 1 may not be inspected (a non-dumpable init in some sandboxes) the agent's own
  // netns still never is a candidate.
  if (!pid1) debug?.(`cannot stat ${pid1Ns}; excluding only this process's own netns`);
  const excluded = [pid1, statNs('/proc/self/ns/net')].filter((x): x is fs.BigIntStats => x !== undefined);
  if (excluded.length === 0) throw new Error('cannot tell the host network namespace: neither pid 1 nor this process has a readable ns/net');
  const out: NodeProcess[] = [];
  for (const e of entries) {
    // /proc lists processes as directories; a fake /proc in tests may use symlinks to them.
    if (!/^[0-9]+$/.test(e.name) || (!e.isDirectory() && !e.isSymbolicLink())) continue;
    const dir = path.join(procRoot, e.name);
    const nsPath = path.join(dir, 'ns', 'net');
    const st = statNs(nsPath);
    if (!st || excluded.some((h) => h.ino === st.ino && h.dev === st.dev)) continue;
    const start = parseStartTime(readText(path.join(dir, 'stat')) ?? '');
    if (start === undefined) continue; // the process went away, or this is not a procfs entry
    let podUid: string | undefined;
    try {
      const uid = podFromCgroups(readText(path.join(dir, 'cgroup')) ?? '')?.uid.toLowerCase();
      podUid = uid === '' ? undefined : uid;
    } catch (err) {
      debug?.(`pid ${e.name}: ${(err as Error).message}`);
    }
    out.push({ pid: Number(e.name), nsPath, dev: st.dev, ino: st.ino, start, ...(podUid ? { podUid } : {}) });
  }
  return out;
}
