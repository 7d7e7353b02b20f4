// Shared pieces of the native addon's root tests: a loud root/tool guard, namespaces with
// unique names that are always removed, the nft CLI as a second opinion, and the expected shape
// of a transaction (from the project's FakeNft) against a JSON listing.
import { NftJsonRuleset } from '../../../src/nft/json';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { buildCapture } from '../../../src/capture/build';
import { parseCaptureConfig } from '../../../src/capture/config';
import { FakeNft } from '../../../src/nft/fake';
import { Transaction } from '../../../src/nft/transaction';
import { Case, loadSuite } from '../../support/conformance';

/** Fails (never skips) when the tests cannot run for real. */
export function requireRootAndTools(...tools: string[]): void {
  if (process.getuid?.() !== 0) {
    throw new Error('the native addon tests need root (they create network namespaces); run them as root');
  }
  for (const t of ['ip', 'nft', ...tools]) {
    if (spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0) {
      throw new Error(`the native addon tests need "${t}" on PATH (apt-get install nftables iproute2 util-linux)`);
    }
  }
}

export interface Netns {
  readonly name: string;
  readonly path: string;
  remove(): void;
}

let counter = 0;
const live = new Set<string>();

/** A fresh named netns icts-addon-<pid>-<n> with lo up. */
export function makeNetns(): Netns {
  const name = `icts-addon-${process.pid}-${counter++}`;
  execFileSync('ip', ['netns', 'add', name]);
  live.add(name);
  execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return {
    name,
    path: `/run/netns/${name}`,
    remove: () => removeNetns(name),
  };
}

export function removeNetns(name: string): void {
  if (!live.delete(name)) return;
  if (!fs.existsSync(`/run/netns/${name}`)) return;
  const r = spawnSync('ip', ['netns', 'del', name], { encoding: 'utf8' });
  if (r.status !== 0 || fs.existsSync(`/run/netns/${name}`)) {
    throw new Error(`cannot remove netns ${name}: ${r.stderr}`);
  }
}

/** For after hooks: removes every netns this process made and still holds. */
export function removeAllNetns(): void {
  for (const name of [...live]) removeNetns(name);
}

/** Removes the netns the hard way, as something outside us would: unmount, then unlink. */
export function vanishNetns(ns: Netns, opts: { unlink: boolean } = { unlink: true }): void {
  execFileSync('umount', ['--lazy', ns.path]); // as `ip netns del` does: MNT_DETACH
  if (opts.unlink) {
    fs.rmSync(ns.path);
    live.delete(ns.name);
  }
}

/** The nft CLI inside a named netns; throws with stderr when it fails. */
export function nftCli(ns: Netns, args: string[], input?: string): string {
  const r = spawnSync('ip', ['netns', 'exec', ns.name, 'nft', ...args], { encoding: 'utf8', input });
  if (r.status !== 0) throw new Error(`nft ${args.join(' ')} in ${ns.name} failed: ${r.stderr}`);
  return r.stdout;
}

const captureCases = new Map<string, Case>(loadSuite('capture').map((c) => [c.case, c]));

export function captureCaseNames(): string[] {
  if (captureCases.size === 0) throw new Error('the capture conformance suite is missing (set ISTIO_CONFORMANCE_DIR)');
  return [...captureCases.keys()];
}

export function captureTx(name: string): Transaction {
  const c = captureCases.get(name);
  if (!c) throw new Error(`no capture conformance case "${name}"`);
  return buildCapture(parseCaptureConfig(c.input));
}

/** Group names some capture goldens use, which nft must resolve while it parses. */
export function groupNamesIn(text: string): string[] {
  const names = new Set<string>();
  for (const m of text.matchAll(/\bskgid (?:!= )?(\{[^}]*\}|\S+)/g)) {
    for (const g of m[1].replace(/[{}]/g, '').split(',')) {
      const t = g.trim();
      if (t && !/^\d+$/.test(t)) names.add(t);
    }
  }
  return [...names];
}

/** Tables, chains (with base hook) and rule count per chain, in a stable text form. */
export type Shape = string[];

/** The state a transaction leaves in an empty netns, per the project's FakeNft. */
export function expectedShape(tx: Transaction): Shape {
  const fake = new FakeNft();
  fake.run(tx);
  const counts = new Map<string, number>();
  const out: string[] = [];
  for (const line of fake.dump().split('\n')) {
    let m = /^add table (\S+) (\S+)$/.exec(line);
    if (m) {
      out.push(`table ${m[1]} ${m[2]}`);
      continue;
    }
    m = /^add chain (\S+) (\S+) (\S+)(?: \{ type (\S+) hook (\S+) priority (-?\d+) ; \})?$/.exec(line);
    if (m) {
      const base = m[4] ? ` ${m[4]} ${m[5]} ${m[6]}` : '';
      out.push(`chain ${m[1]} ${m[2]} ${m[3]}${base}`);
      continue;
    }
    m = /^add rule (\S+) (\S+) (\S+) /.exec(line);
    if (m) {
      const key = `${m[1]} ${m[2]} ${m[3]}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  }
  for (const [k, n] of counts) out.push(`rules ${k} ${n}`);
  return out.sort();
}

/** The same shape read from `nft -j list ruleset`. */
export function shapeOfJson(json: NftJsonRuleset): Shape {
  const counts = new Map<string, number>();
  const out: string[] = [];
  for (const item of json.nftables) {
    if (item.table) out.push(`table ${item.table.family} ${item.table.name}`);
    if (item.chain) {
      const c = item.chain;
      const base = c.hook ? ` ${c.type} ${c.hook} ${c.prio}` : '';
      out.push(`chain ${c.family} ${c.table} ${c.name}${base}`);
    }
    if (item.rule) {
      const key = `${item.rule.family} ${item.rule.table} ${item.rule.chain}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  }
  for (const [k, n] of counts) out.push(`rules ${k} ${n}`);
  return out.sort();
}

/** Readlink of the process' netns and of every thread's. */
export function threadNetns(): { process: string; threads: Map<string, string> } {
  const threads = new Map<string, string>();
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try {
      threads.set(tid, fs.readlinkSync(`/proc/self/task/${tid}/ns/net`));
    } catch {
      // the thread ended while we looked
    }
  }
  return { process: fs.readlinkSync('/proc/self/ns/net'), threads };
}

export function openFdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/**
 * The process' thread count once at most `expected` remain, or after `ms`: an nft job thread
 * ends a moment after its call settles (it posts its result first).
 */
export async function taskCountSettled(expected: number, ms = 2000): Promise<number> {
  const deadline = Date.now() + ms;
  for (;;) {
    const n = fs.readdirSync('/proc/self/task').length;
    if (n <= expected || Date.now() > deadline) return n;
    await new Promise((r) => setTimeout(r, 5));
  }
}
