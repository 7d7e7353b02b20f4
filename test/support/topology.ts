// A pod network namespace wired to a peer namespace by a veth pair, dual-stack on request,
// and helpers to run probe servers and clients inside them (optionally as another UID).
import { ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { PACKAGE_ROOT } from './conformance';
import { makeNetns } from './root';

export const SERVER = path.join(PACKAGE_ROOT, 'dist', 'test', 'fixtures', 'probe-server.js');
export const CLIENT = path.join(PACKAGE_ROOT, 'dist', 'test', 'fixtures', 'probe-client.js');
export const BIN = path.join(PACKAGE_ROOT, 'bin', 'istio-cni-ts.js');

export const POD_V4 = '10.248.0.2';
export const PEER_V4 = '10.248.0.1';
export const PEER2_V4 = '10.248.0.3';
export const POD_V6 = 'fd00:248::2';
export const PEER_V6 = 'fd00:248::1';
export const PEER2_V6 = 'fd00:248::3';

export interface Topology {
  pod: ReturnType<typeof makeNetns>;
  peer: ReturnType<typeof makeNetns>;
  children: ChildProcess[];
  remove(): void;
}

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

export function makeTopology(tag: string, dualStack: boolean): Topology {
  const pod = makeNetns(`${tag}-pod`);
  const peer = makeNetns(`${tag}-peer`);
  ip('-n', pod.name, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', peer.name);
  ip('-n', pod.name, 'addr', 'add', `${POD_V4}/24`, 'dev', 'eth0');
  ip('-n', peer.name, 'addr', 'add', `${PEER_V4}/24`, 'dev', 'eth0');
  ip('-n', peer.name, 'addr', 'add', `${PEER2_V4}/24`, 'dev', 'eth0');
  if (dualStack) {
    ip('-n', pod.name, 'addr', 'add', `${POD_V6}/64`, 'dev', 'eth0', 'nodad');
    ip('-n', peer.name, 'addr', 'add', `${PEER_V6}/64`, 'dev', 'eth0', 'nodad');
    ip('-n', peer.name, 'addr', 'add', `${PEER2_V6}/64`, 'dev', 'eth0', 'nodad');
  }
  for (const ns of [pod, peer]) ip('-n', ns.name, 'link', 'set', 'eth0', 'up');
  const t: Topology = {
    pod,
    peer,
    children: [],
    remove() {
      for (const c of t.children) c.kill('SIGKILL');
      pod.remove();
      peer.remove();
    },
  };
  return t;
}

function asUid(uid: number | undefined): string[] {
  return uid === undefined ? [] : ['setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups'];
}

/** Start a probe server in `ns` and wait until it listens. */
export function startServer(t: Topology, ns: string, host: string, port: number, mode: 'tcp' | 'udp' | 'tproxy', label: string, uid?: number): Promise<void> {
  const child = spawn('ip', ['netns', 'exec', ns, ...asUid(uid), process.execPath, SERVER, host, String(port), mode, label], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.children.push(child);
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    child.stdout!.on('data', (d) => String(d).includes('ready') && resolve());
    child.on('exit', (code) => reject(new Error(`probe server ${label} exited ${code}: ${err}`)));
  });
}

export interface ProbeReply {
  label: string;
  local: { address: string; port: number };
  remote: { address: string; port: number };
  origDst: { address: string; port: number; family: number } | null;
  error?: string;
}

/** Connect from `ns` (optionally as `uid`) and return the reply of whichever server answered. */
export function probe(ns: string, host: string, port: number, opts: { uid?: number; mode?: 'tcp' | 'udp'; timeoutMs?: number } = {}): ProbeReply {
  const r = spawnSync(
    'ip',
    ['netns', 'exec', ns, ...asUid(opts.uid), process.execPath, CLIENT, host, String(port), opts.mode ?? 'tcp', String(opts.timeoutMs ?? 3000)],
    { encoding: 'utf8' },
  );
  const out = r.stdout.trim();
  if (r.status !== 0 || !out.startsWith('{')) return { error: out || r.stderr } as ProbeReply;
  return JSON.parse(out) as ProbeReply;
}

/** Run the istio-cni-ts binary; returns status and output. */
export function cli(args: string[], netnsExec?: string, uid?: number) {
  const cmd = netnsExec
    ? (['ip', ['netns', 'exec', netnsExec, ...asUid(uid), process.execPath, BIN, ...args]] as const)
    : ([process.execPath, [BIN, ...args]] as const);
  return spawnSync(cmd[0], [...cmd[1]], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' } });
}
