// The node side of the containerd ambient e2e test (containerd-ambient.test.ts): what the ambient
// node agent needs around it when it runs as its own process, the way the DaemonSet runs it.
//
// * An "agent container": the agent process runs in a network namespace of its own (the host rule
//   and probe sets it writes into "its host netns" land there, never in this machine's nftables)
//   and in a private mount namespace whose root is a tmpfs holding a recursive bind of every
//   top-level directory of the host, plus `/host` → `/proc/<containerd pid>/root`: the node's root
//   as containerd sees it, where the pod netns bind mounts are. That is Istio's `/host` mount
//   (CNI_NETNS paths are opened under it, `/host/proc` is searched for kubelet). The mounts exist
//   only in that namespace and go away with the agent.
// * A TCP forwarder inside that netns on 127.0.0.1:<API port> to the API stand-in on the host's
//   loopback, so the agent and the plugin (which containerd runs in the host netns) use the same
//   KUBERNETES_SERVICE_HOST/PORT.
// * A kubelet stand-in: a copy of `sleep` named `kubelet`, run as a UID of its own, for the
//   agent's kubelet UID lookup in /host/proc.
import { ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { withNetnsSync } from '../../../src/netns/nft';
import { PROBE_CLIENT } from './harness';

/** The UID the kubelet stand-in runs as (the host rule SNATs probes from sockets of this UID). */
export const KUBELET_UID = 4243;

/**
 * Run as `sh -c SCRIPT sh <root dir> <containerd pid> <command...>` inside `unshare --mount`:
 * builds the container root on a tmpfs and execs the command chrooted into it.
 */
const AGENT_ROOT_SCRIPT = [
  'set -e',
  'R="$1"; T="$2"; shift 2',
  'mount -t tmpfs -o mode=0755 icts-agent-root "$R"',
  'for e in /*; do',
  '  n=${e#/}',
  '  if [ -L "$e" ]; then ln -s "$(readlink "$e")" "$R/$n"',
  '  elif [ -d "$e" ]; then mkdir "$R/$n"; mount --rbind "$e" "$R/$n"',
  '  fi',
  'done',
  'ln -s "/proc/$T/root" "$R/host"',
  'cd /',
  'exec chroot "$R" "$@"',
].join('\n');

/**
 * argv that runs `command` in the agent container: netns `netnsPath`, a private mount namespace,
 * root built at `rootDir` (an empty directory), `/host` = containerd's root. Every step execs the
 * next, so the spawned pid is the command's.
 */
export function agentContainerArgv(o: { netnsPath: string; rootDir: string; containerdPid: number; command: string[] }): string[] {
  return [
    'nsenter',
    `--net=${o.netnsPath}`,
    '--',
    'unshare',
    '--mount',
    '--propagation',
    'private',
    '--',
    'sh',
    '-c',
    AGENT_ROOT_SCRIPT,
    'sh',
    o.rootDir,
    String(o.containerdPid),
    ...o.command,
  ];
}

/**
 * Listens inside the netns on `port` (all its addresses: only lo exists there) and pipes each
 * connection to 127.0.0.1:`targetPort` of this process's netns. TLS passes through untouched.
 */
export function forwardInto(netnsPath: string, port: number, targetPort: number): { close(): Promise<void>; connections: () => number } {
  const open = new Set<net.Socket>();
  let count = 0;
  const srv = net.createServer((c) => {
    count++;
    const up = net.connect(targetPort, '127.0.0.1');
    open.add(c).add(up);
    const done = () => {
      c.destroy();
      up.destroy();
      open.delete(c);
      open.delete(up);
    };
    c.on('error', done).on('close', done);
    up.on('error', done).on('close', done);
    c.pipe(up).pipe(c);
  });
  // Without a host the socket is created and bound synchronously, so inside the netns.
  withNetnsSync(netnsPath, () => srv.listen(port));
  return {
    connections: () => count,
    close: () => {
      for (const s of open) s.destroy();
      return new Promise((r) => srv.close(() => r()));
    },
  };
}

/** Starts the kubelet stand-in (comm `kubelet`, its path names `dir`) as KUBELET_UID. */
export function startKubeletStandIn(dir: string): ChildProcess {
  fs.mkdirSync(dir, { recursive: true });
  const exe = path.join(dir, 'kubelet');
  fs.copyFileSync(fs.realpathSync('/bin/sleep'), exe);
  fs.chmodSync(exe, 0o755);
  return spawn('setpriv', [`--reuid=${KUBELET_UID}`, `--regid=${KUBELET_UID}`, '--clear-groups', exe, '100000'], { stdio: 'ignore' });
}

export interface CmdResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A command inside a netns, without blocking the event loop (the stand-ins live in this process). */
export function inNetns(netnsPath: string, cmd: string[], timeoutMs = 15_000): Promise<CmdResult> {
  return new Promise((resolve) => {
    execFile('nsenter', [`--net=${netnsPath}`, '--', ...cmd], { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null) : 0;
      resolve({ code, stdout, stderr: stderr || (err && code === null ? String(err) : '') });
    });
  });
}

async function must(netnsPath: string, cmd: string[]): Promise<string> {
  const r = await inNetns(netnsPath, cmd);
  if (r.code !== 0) throw new Error(`${cmd.join(' ')} in ${netnsPath}: exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}

interface NftObject {
  table?: { family: string; name: string };
  set?: { family: string; table: string; name: string; elem?: unknown[] };
  [k: string]: unknown;
}

/** `nft -j list ruleset` in the netns, as its objects. */
export async function nftObjects(netnsPath: string): Promise<NftObject[]> {
  const j = JSON.parse(await must(netnsPath, ['nft', '-j', 'list', 'ruleset'])) as { nftables: NftObject[] };
  return j.nftables.filter((o) => !('metainfo' in o));
}

/** The tables in the netns, as `family name`. */
export async function nftTables(netnsPath: string): Promise<string[]> {
  return (await nftObjects(netnsPath))
    .filter((o) => o.table)
    .map((o) => `${o.table!.family} ${o.table!.name}`)
    .sort();
}

export const nftText = (netnsPath: string): Promise<string> => must(netnsPath, ['nft', 'list', 'ruleset']);

export const ipRules = (netnsPath: string): Promise<string> => must(netnsPath, ['ip', '-4', 'rule', 'show']);

export interface Reply {
  label?: string;
  uid?: string;
  local?: { address: string; port: number };
  origDst?: { address: string; port: number } | null;
  error?: string;
}

/** One TCP connection from inside the netns; the JSON line of whichever listener took it. */
export async function probeFrom(netnsPath: string, host: string, port: number): Promise<Reply> {
  const r = await inNetns(netnsPath, [process.execPath, PROBE_CLIENT, host, String(port), 'tcp', '3000']);
  const out = r.stdout.trim();
  if (r.code !== 0 || !out.startsWith('{')) return { error: `${out}${r.stderr}`.trim() || `exit ${r.code}` };
  return JSON.parse(out) as Reply;
}

/** GET http://127.0.0.1:<port><path> from inside the netns: status and body. */
export async function httpGetIn(netnsPath: string, port: number, urlPath: string): Promise<{ status: number; body: string }> {
  const script = `require('http').get({host:'127.0.0.1',port:${port},path:${JSON.stringify(urlPath)},timeout:3000},(r)=>{let b='';r.on('data',(c)=>b+=c);r.on('end',()=>{process.stdout.write(JSON.stringify({status:r.statusCode,body:b}))})}).on('error',(e)=>{process.stdout.write(JSON.stringify({status:0,body:e.message}))})`;
  const r = await inNetns(netnsPath, [process.execPath, '-e', script]);
  try {
    return JSON.parse(r.stdout) as { status: number; body: string };
  } catch {
    return { status: 0, body: `${r.stdout}${r.stderr}` };
  }
}

/** Name prefix of the agent's netns (makeNetns adds `-<pid>-<n>`). */
export const AGENT_NETNS_TAG = 'e2e-agent';

/**
 * Deletes the agent netns of earlier runs that were killed before their cleanup
 * (`icts-e2e-agent-<pid>-<n>` whose pid is gone). Returns their names.
 */
export function sweepStaleAgentNetns(): string[] {
  const swept: string[] = [];
  let names: string[] = [];
  try {
    names = fs.readdirSync('/run/netns');
  } catch {
    return swept;
  }
  for (const name of names) {
    const m = new RegExp(`^icts-${AGENT_NETNS_TAG}-(\\d+)-\\d+$`).exec(name);
    if (!m || Number(m[1]) === process.pid) continue;
    try {
      process.kill(Number(m[1]), 0);
      continue; // its run is alive
    } catch {
      // gone
    }
    spawnSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
    swept.push(name);
  }
  return swept;
}
