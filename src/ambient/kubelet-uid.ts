// The UID kubelet runs as, found by looking through the host's /proc (mounted at /host/proc in
// the agent's pod): the host rule SNATs only probes from sockets of that UID.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Id, parseId } from '../values/typed';

/** The host's /proc as the DaemonSet mounts it. */
export const HOST_PROC = '/host/proc';

/**
 * Process names that host kubelet, in Istio's order. For kubelet and MicroK8s' kubelite some
 * argument must also mention "kubelet"; k3s embeds kubelet without saying so on its command line.
 */
const KUBELET_HOSTS: ReadonlyArray<{ comm: string; needsKubeletArg: boolean }> = [
  { comm: 'kubelet', needsKubeletArg: true },
  { comm: 'kubelite', needsKubeletArg: true },
  { comm: 'k3s', needsKubeletArg: false },
];

function read(p: string): string | undefined {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return undefined; // the process went away, or we may not read it
  }
}

/** The real UID (first field of "Uid:") from a /proc/<pid>/status text. */
function realUid(status: string): string | undefined {
  return /^Uid:\s+([0-9]+)/m.exec(status)?.[1];
}

/**
 * The real UID of the first process, by ascending PID, that hosts kubelet. Processes that vanish
 * or cannot be read while we look are skipped. Throws when there is none.
 */
export function findKubeletUid(procPath: string = HOST_PROC): Id {
  let names: string[];
  try {
    names = fs.readdirSync(procPath);
  } catch (e) {
    throw new Error(`cannot read processes from ${procPath}: ${(e as Error).message}`);
  }
  const pids = names
    .filter((n) => /^[0-9]+$/.test(n))
    .map(Number)
    .sort((a, b) => a - b);
  for (const pid of pids) {
    const dir = path.join(procPath, String(pid));
    const comm = read(path.join(dir, 'comm'))?.replace(/\n$/, '');
    const kind = KUBELET_HOSTS.find((k) => k.comm === comm);
    if (!kind) continue;
    if (kind.needsKubeletArg) {
      const args = read(path.join(dir, 'cmdline'))?.split('\0') ?? [];
      if (!args.some((a) => a.toLowerCase().includes('kubelet'))) continue;
    }
    const status = read(path.join(dir, 'status'));
    const uid = status === undefined ? undefined : realUid(status);
    if (uid === undefined) continue;
    return parseId(`${dir}/status Uid`, uid);
  }
  throw new Error(`no kubelet process (kubelet, kubelite or k3s) found in ${procPath}`);
}
