// Network namespaces as a runtime makes them for pods: created right before use (after the
// previous one was deleted, as on a node where pods come and go) and removed after.
import { execFileSync, spawn } from 'node:child_process';

export interface BenchNetns {
  name: string;
  path: string;
  remove(): void;
}

let seq = 0;

/** A new netns `icts-<tag>-<pid>-<n>`; with `loUp`, its loopback up (as the pod's runtime leaves it). */
export function freshNetns(tag: string, opts: { loUp?: boolean } = {}): BenchNetns {
  const name = `icts-${tag}-${process.pid}-${seq++}`;
  execFileSync('ip', ['netns', 'add', name]);
  if (opts.loUp) execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return { name, path: `/run/netns/${name}`, remove: () => execFileSync('ip', ['netns', 'del', name]) };
}

/** The exec baseline: `nsenter --net=<netns> nft -f -` with `script` on stdin, as a child process. */
export function nftExec(nsPath: string, script: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('nsenter', [`--net=${nsPath}`, 'nft', '-f', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`nft exited ${code}: ${err}`))));
    child.stdin.end(script);
  });
}

/** The nftables tables in a netns (`nft list tables`), one per line. */
export function nftTables(ns: BenchNetns): string[] {
  return execFileSync('ip', ['netns', 'exec', ns.name, 'nft', 'list', 'tables'], { encoding: 'utf8' }).split('\n').filter(Boolean);
}
