// Network namespaces as a runtime makes them for pods: created right before use (after the
// previous one was deleted, as on a node where pods come and go) and removed after.
import { execFileSync } from 'node:child_process';

export interface BenchNetns {
  name: string;
  path: string;
  remove(): void;
}

let seq = 0;

export function freshNetns(tag: string): BenchNetns {
  const name = `icts-${tag}-${process.pid}-${seq++}`;
  execFileSync('ip', ['netns', 'add', name]);
  return { name, path: `/run/netns/${name}`, remove: () => execFileSync('ip', ['netns', 'del', name]) };
}

/** The nftables tables in a netns (`nft list tables`), one per line. */
export function nftTables(ns: BenchNetns): string[] {
  return execFileSync('ip', ['netns', 'exec', ns.name, 'nft', 'list', 'tables'], { encoding: 'utf8' }).split('\n').filter(Boolean);
}
