// The ambient controller's decisions (Istio's informers.go) against the local API stand-in (plain
// HTTP here) with a recording dataplane: namespace labels enqueue their pods, pods without IPs
// wait, opting out removes, deletion removes (as a delete), excluded namespaces and host-network
// pods are never enrolled, a terminated pod is removed, an IP change re-syncs the probe set, a
// retryable failure is retried until it succeeds, a non-retryable one is not.
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { AmbientController } from '../../src/agent/ambient/controller';
import { MeshDataplane, NonRetryableAddError } from '../../src/agent/ambient/dataplane';
import { Pod, podRef, podUid } from '../../src/kube/pod';
import { MemoryLogger } from '../../src/log/logger';
import { formatIp, IpAddr } from '../../src/net/ip';
import { RestClient } from '../../src/kube/rest';
import { KubeApiStandIn, Obj } from '../support/kube-api';

const NODE = 'n1';
const SELECTORS = [
  { podSelector: { matchLabels: { 'istio.io/dataplane-mode': 'ambient' } } },
  {
    podSelector: { matchExpressions: [{ key: 'istio.io/dataplane-mode', operator: 'NotIn', values: ['none'] }] },
    namespaceSelector: { matchLabels: { 'istio.io/dataplane-mode': 'ambient' } },
  },
];

class RecordingDataplane {
  readonly calls: string[] = [];
  enrolled = new Set<string>();
  /** Add attempts that fail (retryable) before one succeeds, per pod name. */
  failAdds = new Map<string, number>();
  nonRetryable = new Set<string>();
  isEnrolled(uid: string): boolean {
    return this.enrolled.has(uid);
  }
  async addPodToMesh(pod: Pod, ips: readonly IpAddr[], netns: string): Promise<void> {
    this.calls.push(`add ${podRef(pod)} ${ips.map(formatIp).join(',')} ${netns || '-'}`);
    if (this.nonRetryable.has(podRef(pod))) throw new NonRetryableAddError('no netns');
    const left = this.failAdds.get(podRef(pod)) ?? 0;
    if (left > 0) {
      this.failAdds.set(podRef(pod), left - 1);
      throw new Error('no ztunnel connection');
    }
    this.enrolled.add(podUid(pod));
  }
  async removePodFromMesh(pod: Pod, isDelete: boolean): Promise<void> {
    this.calls.push(`remove ${podRef(pod)} ${isDelete ? 'delete' : 'unlabel'} ${(pod.status?.podIPs ?? []).map((x) => x.ip).join(',')}`);
    this.enrolled.delete(podUid(pod));
  }
  async syncHostProbeIPSet(pod: Pod, ips: readonly IpAddr[]): Promise<void> {
    this.calls.push(`sync ${podRef(pod)} ${ips.map(formatIp).join(',')}`);
  }
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup() {
  const api = await new KubeApiStandIn().start();
  const dp = new RecordingDataplane();
  const ac = new AbortController();
  const rest = new RestClient({ server: api.url });
  const c = new AmbientController({
    api: rest,
    nodeName: NODE,
    systemNamespace: 'istio-system',
    selectors: SELECTORS,
    excludeNamespaces: ['kube-system', 'skipped'],
    dataplane: dp as unknown as MeshDataplane,
    log: new MemoryLogger(),
    informer: { backoffMinMs: 20, backoffMaxMs: 100 },
    retry: { baseMs: 5, maxMs: 40 },
  });
  cleanups.push(async () => {
    ac.abort();
    rest.close();
    await api.close();
  });
  for (const ns of ['shop', 'plain', 'kube-system', 'skipped', 'istio-system']) api.upsertNamespace(ns);
  await c.startInformers(ac.signal);
  void c.runQueue(ac.signal);
  const settle = async () => {
    await new Promise((r) => setTimeout(r, 150));
    await c.idle();
  };
  return { api, dp, c, settle };
}

function pod(
  name: string,
  over: {
    ns?: string;
    labels?: Record<string, string>;
    ip?: string;
    phase?: string;
    hostNetwork?: boolean;
    annotations?: Record<string, string>;
    node?: string;
  } = {},
): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: over.ns ?? 'shop', uid: `uid-${name}`, labels: over.labels ?? {}, annotations: over.annotations ?? {} },
    spec: { nodeName: over.node ?? NODE, hostNetwork: over.hostNetwork ?? false },
    status: { phase: over.phase ?? 'Running', ...(over.ip ? { podIP: over.ip, podIPs: [{ ip: over.ip }] } : {}) },
  };
}

test('namespace labeled ambient: its running pods with IPs are enrolled (netns from the cache: ""), pods without IP wait; other nodes are not watched', async () => {
  const { api, dp, settle } = await setup();
  api.upsert(pod('a', { ip: '10.0.0.1' }));
  api.upsert(pod('b'));
  api.upsert(pod('c', { ip: '10.0.0.3', node: 'elsewhere' }));
  await settle();
  assert.deepEqual(dp.calls, [], 'pod adds alone do nothing (the CNI event enrolls new pods)');
  api.upsertNamespace('shop', { 'istio.io/dataplane-mode': 'ambient' });
  await settle();
  assert.deepEqual(dp.calls, ['add shop/a 10.0.0.1 -']);
  api.upsert(pod('b', { ip: '10.0.0.2' }));
  await settle();
  assert.deepEqual(dp.calls, ['add shop/a 10.0.0.1 -', 'add shop/b 10.0.0.2 -']);
});

test('opting out removes (not a delete); deletion removes as a delete; the annotation alone is no reason to act', async () => {
  const { api, dp, settle } = await setup();
  api.upsert(pod('a', { labels: { 'istio.io/dataplane-mode': 'ambient' } }));
  api.upsert(pod('a', { ip: '10.0.0.1', labels: { 'istio.io/dataplane-mode': 'ambient' } }));
  await settle();
  // The agent's own patch comes back as an update: nothing to do.
  api.upsert(pod('a', { ip: '10.0.0.1', labels: { 'istio.io/dataplane-mode': 'ambient' }, annotations: { 'ambient.istio.io/redirection': 'enabled' } }));
  await settle();
  assert.deepEqual(dp.calls, ['add shop/a 10.0.0.1 -'], 'the update with an IP enrolls; the annotated one changes nothing');
  api.upsert(pod('a', { ip: '10.0.0.1', labels: { 'istio.io/dataplane-mode': 'none' }, annotations: { 'ambient.istio.io/redirection': 'enabled' } }));
  await settle();
  assert.equal(dp.calls[1], 'remove shop/a unlabel 10.0.0.1');
  api.upsert(pod('d', { ip: '10.0.0.4', labels: { 'istio.io/dataplane-mode': 'ambient' }, annotations: { 'ambient.istio.io/redirection': 'enabled' } }));
  await settle();
  api.remove('shop', 'd');
  await settle();
  assert.equal(dp.calls[dp.calls.length - 1], 'remove shop/d delete 10.0.0.4');
});

test('excluded namespaces and host-network pods are never enrolled; ztunnel pods are not enqueued by namespace events', async () => {
  const { api, dp, settle } = await setup();
  api.upsert(pod('x', { ns: 'skipped', ip: '10.0.0.9', labels: { 'istio.io/dataplane-mode': 'ambient' } }));
  api.upsert(pod('x', { ns: 'skipped', ip: '10.0.0.9', labels: { 'istio.io/dataplane-mode': 'ambient', v: '2' } }));
  api.upsert(pod('h', { ip: '10.0.0.8', labels: { 'istio.io/dataplane-mode': 'ambient' }, hostNetwork: true }));
  api.upsert(pod('h', { ip: '10.0.0.8', labels: { 'istio.io/dataplane-mode': 'ambient', v: '2' }, hostNetwork: true }));
  api.upsert(pod('ztunnel-1', { ns: 'istio-system', ip: '10.0.0.7', labels: { app: 'ztunnel' } }));
  api.upsertNamespace('istio-system', { 'istio.io/dataplane-mode': 'ambient' });
  await settle();
  assert.deepEqual(dp.calls, []);
});

test('a terminated enrolled pod is removed as deleted (with the old object); an IP change of an enrolled pod re-syncs the probe set', async () => {
  const { api, dp, settle } = await setup();
  const L = { 'istio.io/dataplane-mode': 'ambient' };
  const A = { 'ambient.istio.io/redirection': 'enabled' };
  api.upsert(pod('j', { ip: '10.0.0.5', labels: L, annotations: A }));
  api.upsert(pod('j', { ip: '10.0.0.6', labels: L, annotations: A }));
  await settle();
  assert.deepEqual(dp.calls, ['sync shop/j 10.0.0.6']);
  api.upsert(pod('j', { ip: '10.0.0.6', labels: L, annotations: A, phase: 'Succeeded' }));
  await settle();
  assert.deepEqual(dp.calls, ['sync shop/j 10.0.0.6', 'remove shop/j delete 10.0.0.6']);
});

test('retryable add failures (ztunnel away) are retried until they succeed; non-retryable ones are dropped', async () => {
  const { api, dp, settle } = await setup();
  const L = { 'istio.io/dataplane-mode': 'ambient' };
  dp.failAdds.set('shop/r', 3);
  dp.nonRetryable.add('shop/n');
  api.upsert(pod('r', { ip: '10.0.0.10', labels: L }));
  api.upsert(pod('r', { ip: '10.0.0.10', labels: L, annotations: { 'ambient.istio.io/redirection': 'pending' } }));
  api.upsert(pod('n', { ip: '10.0.0.11', labels: L }));
  api.upsert(pod('n', { ip: '10.0.0.11', labels: L, annotations: { x: 'y' } }));
  await settle();
  await new Promise((r) => setTimeout(r, 200));
  const adds = (name: string) => dp.calls.filter((c) => c.startsWith(`add shop/${name} `)).length;
  assert.ok(adds('r') >= 4, `retried: ${adds('r')} attempts`);
  assert.ok(dp.enrolled.has('uid-r'));
  assert.equal(adds('n'), 1, 'one attempt for the one update, not retried');
});
