// The pods, prevResults, expected tables and the checked ADD/DEL pair of the 100-pod concurrency
// tests (standalone plugin and shim -> agent): both drive the same mix, so it is written once.
import * as assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { promisify } from 'node:util';
import { buildCapture } from '../../src/capture/build';
import { Pod } from '../../src/kube/pod';
import { tablesOf } from '../../src/nft/transaction';
import { planSidecar } from '../../src/plugin/istio';
import { extractPodInfo } from '../../src/redirect';
import { sidecarPod } from './cni-fakes';
import { addNetns, tableNames } from './root';

/** Pod `<prefix>-<i>` in namespace load: default REDIRECT, TPROXY with inbound capture, and some with port/CIDR annotations. */
export function mixedPod(prefix: string, i: number): Pod {
  const name = `${prefix}-${i}`;
  if (i % 4 === 1)
    return sidecarPod({
      name,
      namespace: 'load',
      annotations: { 'sidecar.istio.io/interceptionMode': 'TPROXY', 'traffic.sidecar.istio.io/includeInboundPorts': '9090' },
    });
  if (i % 4 === 2)
    return sidecarPod({
      name,
      namespace: 'load',
      annotations: { 'traffic.sidecar.istio.io/excludeOutboundIPRanges': `10.${i}.0.0/16`, 'traffic.sidecar.istio.io/excludeInboundPorts': String(8000 + i) },
    });
  return sidecarPod({ name, namespace: 'load' });
}

/** The primary plugin's result for pod `i` in `netns`: an address in 10.<net>.0.0/16. */
export const prevResultIn = (net: number, netns: string, i: number) => ({
  cniVersion: '1.0.0',
  interfaces: [{ name: 'eth0', sandbox: netns }],
  ips: [{ address: `10.${net}.${i >> 8}.${(i & 0xff) + 1}/16`, gateway: `10.${net}.255.254`, interface: 0 }],
  routes: [{ dst: '0.0.0.0/0' }],
  dns: {},
});

/** The tables (`family name`, sorted) the pod's sidecar capture config names. */
export function expectedTables(pod: Pod, netnsPath: string): string[] {
  const p = planSidecar(extractPodInfo(pod), { netnsPath, enableIPv6: false });
  assert.ok(p.capture);
  return tablesOf(buildCapture(p.config))
    .map((t) => `${t.family} ${t.table}`)
    .sort();
}

const run = promisify(execFile);

/** The netns's tables as `family name`, sorted. */
export async function netnsTables(ns: string): Promise<string[]> {
  return tableNames((await run('ip', ['netns', 'exec', ns, 'nft', '-j', 'list', 'ruleset'])).stdout);
}

export async function netnsRuleset(ns: string): Promise<string> {
  return (await run('ip', ['netns', 'exec', ns, 'nft', 'list', 'ruleset'])).stdout;
}

export interface CniOut {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export const okRun = (r: CniOut, what: string) => assert.equal(r.code, 0, `${what}: exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);

/** How one of the tests runs the plugin, and what else it checks. */
export interface PairRunner {
  cni(command: 'ADD' | 'DEL', nsPath: string, pod: Pod, i: number): Promise<CniOut>;
  prevResult(nsPath: string, i: number): unknown;
  /** Runs each nft look into the netns (e.g. a few at a time); default: at once. */
  look?<T>(f: () => Promise<T>): Promise<T>;
  /** More checks on the first ADD and on the DEL. */
  check?(r: CniOut, what: string): void;
}

/** What the pairs of one test measured: times of the first ADDs and the DELs, repeated ADDs. */
export interface PairStats {
  addMs: number[];
  delMs: number[];
  repeated: number;
}

export const newPairStats = (): PairStats => ({ addMs: [], delMs: [], repeated: 0 });

/**
 * Pod `i` in netns `ns`: ADD (exit 0, its prevResult back, exactly the expected tables), with
 * `repeat` a second ADD that must leave the same ruleset, then DEL (exit 0, no table left).
 * Times and the repeat are added to `stats`.
 */
export async function addCheckDel(p: PairRunner, ns: string, pod: Pod, i: number, repeat: boolean, stats: PairStats): Promise<void> {
  const look = p.look ?? (<T>(f: () => Promise<T>) => f());
  const nsPath = `/run/netns/${ns}`;
  const want = expectedTables(pod, nsPath);
  const add = await p.cni('ADD', nsPath, pod, i);
  okRun(add, `ADD ${ns}`);
  p.check?.(add, `ADD ${ns}`);
  assert.deepEqual(JSON.parse(add.stdout), p.prevResult(nsPath, i), 'prevResult passed through');
  assert.deepEqual(await look(() => netnsTables(ns)), want, `${ns}: exactly the expected tables after ADD`);
  if (repeat) {
    const first = await look(() => netnsRuleset(ns));
    okRun(await p.cni('ADD', nsPath, pod, i), `second ADD ${ns}`);
    assert.equal(await look(() => netnsRuleset(ns)), first, `${ns}: a repeated ADD leaves the same ruleset`);
    stats.repeated++;
  }
  const del = await p.cni('DEL', nsPath, pod, i);
  okRun(del, `DEL ${ns}`);
  p.check?.(del, `DEL ${ns}`);
  assert.deepEqual(await look(() => netnsTables(ns)), [], `${ns}: no table after DEL`);
  stats.addMs.push(add.ms);
  stats.delMs.push(del.ms);
}

/** Netns `<tag>-<i>` for pods 0..count-1, each pod `podFor(i)` added to the API; their names, in order. */
export function podNetns(tag: string, count: number, api: { addPod(p: Pod): unknown }, podFor: (i: number) => Pod): string[] {
  const names: string[] = [];
  for (let i = 0; i < count; i++) {
    names.push(addNetns(`${tag}-${i}`));
    api.addPod(podFor(i));
  }
  return names;
}

/** Deletes every netns in `names` and empties it; `gone` tolerates those already deleted (after hooks). */
export function deleteNetns(names: string[], gone: 'ignore' | 'fail' = 'fail'): void {
  for (const n of names.splice(0)) {
    try {
      execFileSync('ip', ['netns', 'del', n], { stdio: 'ignore' });
    } catch (e) {
      if (gone === 'fail') throw e;
    }
  }
}

/** Nothing left of the run's netns: no /run/netns entry and no mount whose name has `tag`. */
export function assertNetnsGone(tag: string): void {
  assert.deepEqual(
    fs.readdirSync('/run/netns').filter((n) => n.startsWith(tag)),
    [],
    'no netns left',
  );
  assert.ok(!fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(tag), 'no netns mount left');
}
