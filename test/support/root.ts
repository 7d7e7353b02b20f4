// Guards for tests that need root and system tools: they fail loudly, never skip silently.
import { execFileSync, spawnSync } from 'node:child_process';

export function requireRootAndTools(...tools: string[]): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new Error('this test needs root (it creates network namespaces); run the suite as root');
  }
  for (const t of tools) {
    const r = spawnSync('sh', ['-c', `command -v ${t}`], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`this test needs "${t}" on PATH (apt-get install nftables iproute2)`);
  }
}

let counter = 0;

/** Adds netns `name` (/run/netns/<name>) with lo up; returns the name. The caller removes it. */
export function addNetns(name: string): string {
  execFileSync('ip', ['netns', 'add', name]);
  execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return name;
}

/** A fresh named netns (/run/netns/<name>); call the returned cleanup in an after hook. */
export function makeNetns(tag: string): { name: string; path: string; remove: () => void } {
  const name = addNetns(`icts-${tag}-${process.pid}-${counter++}`);
  return {
    name,
    path: `/run/netns/${name}`,
    remove: () => {
      spawnSync('ip', ['netns', 'del', name]);
    },
  };
}

/** Runs a command to its end: its stdout, or an error naming it with its exit status and stderr. */
export function sh(cmd: string[], input?: string, timeoutMs = 30_000): string {
  const r = spawnSync(cmd[0], cmd.slice(1), { encoding: 'utf8', input, timeout: timeoutMs });
  if (r.status !== 0) throw new Error(`${cmd.join(' ')}: exit ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/** Run a command inside a named netns and return stdout; throws with stderr on failure. */
export function inNetns(name: string, cmd: string[], input?: string): string {
  const r = spawnSync('ip', ['netns', 'exec', name, ...cmd], { encoding: 'utf8', input });
  if (r.status !== 0) throw new Error(`${cmd.join(' ')} in ${name} failed: ${r.stderr}`);
  return r.stdout;
}

/** "family name" of every table in `nft -j list ruleset` output, sorted. */
export function tableNames(nftJson: string): string[] {
  const doc = JSON.parse(nftJson) as { nftables: { table?: { family: string; name: string } }[] };
  return doc.nftables
    .filter((x) => x.table)
    .map((x) => `${x.table!.family} ${x.table!.name}`)
    .sort();
}

/** The tables in named netns `ns`, as "family name", sorted. */
export const netnsTableNames = (ns: string): string[] => tableNames(inNetns(ns, ['nft', '-j', 'list', 'ruleset']));
