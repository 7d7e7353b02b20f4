// The repair controller against the local API stand-in over TLS: a broken pod gets the
// configured action (label patch on pods/status, delete with preconditions, or repair through
// the pod repairer), healthy and recovered pods and pods of other nodes are left alone, the
// metric counts each outcome, failures are retried at most 5 times, events are written, and
// no API call outside the action's RBAC is made.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { RepairController, RepairControllerSettings, repairApiRules } from '../../src/agent/repair/controller';
import { RepairOutcome, PodRepairer } from '../../src/agent/repair/redirect';
import { Pod } from '../../src/kube/pod';
import { RestClient } from '../../src/kube/rest';
import { MemoryLogger } from '../../src/log/logger';
import { KubeApiStandIn, NODE, brokenTerminated, brokenWaiting, healthy, recovered, repairPod } from '../support/kube-api';
import { makePki } from '../support/tls';
import { until } from '../support/until';

const pki = makePki();

const base: RepairControllerSettings = {
  repairPods: false,
  deletePods: false,
  labelPods: false,
  labelKey: 'cni.istio.io/uninitialized',
  labelValue: 'true',
  nodeName: NODE,
  labelSelectors: '',
  fieldSelectors: '',
  sidecarAnnotation: 'sidecar.istio.io/status',
  initContainerName: 'istio-validation',
  initTerminationMsg: '',
  initExitCode: 126,
};

class FakeRepairer implements PodRepairer {
  readonly calls: string[] = [];
  failures = 0;
  skip?: string;
  async repair(pod: Pod): Promise<RepairOutcome> {
    this.calls.push(`${pod.metadata?.namespace}/${pod.metadata?.name}`);
    if (this.failures > 0) {
      this.failures--;
      throw new Error('no network namespace holds the pod IP');
    }
    if (this.skip) return { outcome: 'skipped', reason: this.skip };
    return { outcome: 'repaired', netns: '/host/proc/300/ns/net', via: 'ip', tables: ['istio-proxy-nat'] };
  }
}

/** A node with every kind of pod: only the two broken ones on this node may be touched. */
function populate(api: KubeApiStandIn): void {
  api.upsert(repairPod({ name: 'healthy', initStatus: healthy }));
  api.upsert(repairPod({ name: 'recovered', initStatus: recovered }));
  api.upsert(repairPod({ name: 'no-sidecar', annotations: null, initStatus: brokenWaiting }));
  api.upsert(repairPod({ name: 'other-node', node: 'node-b', initStatus: brokenWaiting }));
  api.upsert(repairPod({ name: 'broken-waiting', initStatus: brokenWaiting }));
  api.upsert(repairPod({ name: 'broken-terminated', initStatus: brokenTerminated, labels: { app: 'web' } }));
}

async function harness(t: { after(f: () => unknown): void }, over: Partial<RepairControllerSettings>, repairer?: PodRepairer) {
  const api = await new KubeApiStandIn(pki).start();
  api.token = 'tok';
  const rest = new RestClient({ server: api.url, ca: () => pki.ca, token: () => 'tok' });
  const counts = new Map<string, number>();
  const log = new MemoryLogger();
  const s = { ...base, ...over };
  const c = new RepairController(s, {
    api: rest,
    log,
    count: (type, result) => counts.set(`${type}/${result}`, (counts.get(`${type}/${result}`) ?? 0) + 1),
    repairer,
    informer: { backoffMinMs: 20, backoffMaxMs: 100, watchTimeoutSeconds: () => 30 },
    queueBaseDelayMs: 5,
  });
  const ac = new AbortController();
  let running: Promise<void> | undefined;
  const start = () => (running = c.run(ac.signal));
  t.after(async () => {
    ac.abort();
    await running;
    rest.close();
    await api.close();
  });
  /** Waits for the queue to drain after the cache is in. */
  const settle = async () => {
    await c.pods.synced;
    await new Promise((r) => setTimeout(r, 50));
    await c.queue.idle();
  };
  /** Every non-read call must be allowed by the action's RBAC rules. */
  const assertWithinRbac = () => {
    const rules = repairApiRules(s);
    const allowed = (resource: string, verb: string) => rules.some((r) => r.resources.includes(resource) && r.verbs.includes(verb));
    for (const r of api.requests) {
      const verb =
        r.method === 'GET' ? (r.query.watch === 'true' ? 'watch' : 'list') : r.method === 'DELETE' ? 'delete' : r.method === 'PATCH' ? 'patch' : 'create';
      const resource = r.path.endsWith('/status') ? 'pods/status' : r.path.endsWith('/events') ? 'events' : 'pods';
      assert.ok(allowed(resource, verb), `${r.method} ${r.path} (${resource}:${verb}) is outside the RBAC for this action`);
    }
  };
  return { api, c, counts, log, start, settle, assertWithinRbac };
}

const writes = (api: KubeApiStandIn) => api.requests.filter((r) => r.method !== 'GET' && !r.path.endsWith('/events')).map((r) => `${r.method} ${r.path}`);

test('label: broken pods get the label through a merge patch on pods/status; others untouched', async (t) => {
  const h = await harness(t, { labelPods: true });
  populate(h.api);
  h.start();
  await until(
    'labels',
    () =>
      h.api.pod('shop', 'broken-waiting')?.metadata.labels?.['cni.istio.io/uninitialized'] === 'true' &&
      h.api.pod('shop', 'broken-terminated')?.metadata.labels?.['cni.istio.io/uninitialized'] === 'true',
    15_000,
  );
  await h.settle();
  assert.deepEqual(writes(h.api).sort(), [
    'PATCH /api/v1/namespaces/shop/pods/broken-terminated/status',
    'PATCH /api/v1/namespaces/shop/pods/broken-waiting/status',
  ]);
  const patch = h.api.requests.find((r) => r.method === 'PATCH')!;
  assert.equal(patch.contentType, 'application/merge-patch+json');
  assert.deepEqual(patch.body, { metadata: { labels: { 'cni.istio.io/uninitialized': 'true' } } });
  assert.deepEqual(h.api.pod('shop', 'broken-terminated')!.metadata.labels, { app: 'web', 'cni.istio.io/uninitialized': 'true' });
  for (const n of ['healthy', 'recovered', 'no-sidecar']) assert.deepEqual(h.api.pod('shop', n)!.metadata.labels, {}, n);
  assert.equal(h.counts.get('label/success'), 2);
  // The patch comes back as MODIFIED: the pod now has the label, so that is a skip.
  assert.ok((h.counts.get('label/skip') ?? 0) >= 2);
  assert.deepEqual(h.api.events.map((e) => `${e.reason} ${e.involvedObject && (e.involvedObject as { name: string }).name} ${e.type}`).sort(), [
    'LabelBrokenPod broken-terminated Warning',
    'LabelBrokenPod broken-waiting Warning',
  ]);
  assert.equal((h.api.events[0].source as { component: string }).component, 'cni-repair');
  h.assertWithinRbac();
});

test('label: a pod that already has the label key is skipped, whatever its value', async (t) => {
  const h = await harness(t, { labelPods: true, labelKey: 'testlabel' });
  h.api.upsert(repairPod({ name: 'broken', initStatus: brokenWaiting, labels: { testlabel: 'false' } }));
  h.start();
  await h.settle();
  assert.deepEqual(writes(h.api), []);
  assert.equal(h.counts.get('label/skip'), 1);
  assert.equal(h.api.pod('shop', 'broken')!.metadata.labels!.testlabel, 'false');
});

test('delete: broken pods are deleted with UID and resourceVersion preconditions; others stay', async (t) => {
  const h = await harness(t, { deletePods: true, labelPods: true });
  populate(h.api);
  h.start();
  await until('deleted', () => h.api.pod('shop', 'broken-waiting') === undefined && h.api.pod('shop', 'broken-terminated') === undefined, 15_000);
  await h.settle();
  assert.deepEqual(h.api.podNames(), ['shop/healthy', 'shop/no-sidecar', 'shop/other-node', 'shop/recovered']);
  const del = h.api.requests.filter((r) => r.method === 'DELETE');
  assert.equal(del.length, 2);
  for (const d of del) {
    const pre = (d.body as { preconditions: { uid: string; resourceVersion: string } }).preconditions;
    assert.match(pre.uid, /^uid-shop-broken-/);
    assert.match(pre.resourceVersion, /^\d+$/);
  }
  assert.equal(h.counts.get('delete/success'), 2);
  assert.equal(h.counts.get('label/success'), undefined, 'delete wins over label');
  assert.deepEqual(
    h.api.events.map((e) => e.message),
    ['pod detected as broken, deleted', 'pod detected as broken, deleted'],
  );
  h.assertWithinRbac();
});

test('delete: a pod that changed since it was judged is not deleted (precondition), then retried on the new version', async (t) => {
  const h = await harness(t, { deletePods: true });
  const p = h.api.upsert(repairPod({ name: 'broken', initStatus: brokenWaiting }));
  // Judge a stale copy directly (before the controller runs): the API refuses, a failure.
  await assert.rejects(h.c.reconcilePod({ ...p, metadata: { ...p.metadata, resourceVersion: '1' } }), /HTTP 409 .*Precondition failed/);
  assert.equal(h.counts.get('delete/fail'), 1);
  assert.ok(h.api.pod('shop', 'broken'), 'still there');
  h.start();
  await until('deleted through the queue', () => h.api.pod('shop', 'broken') === undefined && h.counts.get('delete/success') === 1, 15_000);
  assert.ok(h.api.events.some((e) => /failed to delete: .*409/.test(String(e.message))));
});

test('repair: the repairer is called once per pod instance; healthy pods never', async (t) => {
  const r = new FakeRepairer();
  const h = await harness(t, { repairPods: true, deletePods: true }, r);
  populate(h.api);
  h.start();
  await until('two repairs', () => (h.counts.get('repair/success') ?? 0) === 2, 15_000);
  // More status churn of the crash-looping pods: no second repair.
  const b = h.api.pod('shop', 'broken-waiting')!;
  h.api.upsert({ ...b, status: { ...b.status, message: 'still backing off' } });
  await h.settle();
  assert.deepEqual(r.calls.sort(), ['shop/broken-terminated', 'shop/broken-waiting']);
  assert.deepEqual(writes(h.api), [], 'repair mode writes nothing to the API');
  assert.equal(h.api.events.length, 0);
  // A new pod with the same name (new UID) is a new instance: repaired again.
  h.api.remove('shop', 'broken-waiting');
  await h.settle();
  h.api.upsert(repairPod({ name: 'broken-waiting', initStatus: brokenWaiting, uid: 'uid-second' }));
  await until('third repair', () => (h.counts.get('repair/success') ?? 0) === 3, 15_000);
  h.assertWithinRbac();
});

test('repair: failures are retried, at most 5 attempts, each counted; a skip is counted as skip', async (t) => {
  const r = new FakeRepairer();
  r.failures = 99;
  const h = await harness(t, { repairPods: true }, r);
  h.api.upsert(repairPod({ name: 'broken', initStatus: brokenWaiting }));
  h.start();
  await until('gave up', () => h.log.entries.some((e) => /giving up on shop\/broken after 5 attempts/.test(e.msg)), 15_000);
  await h.settle();
  assert.equal(r.calls.length, 5);
  assert.equal(h.counts.get('repair/fail'), 5);
  // The next event for the pod starts afresh; this time the plugin would not capture it.
  r.failures = 0;
  r.skip = 'pod has no istio-proxy container';
  const p = h.api.pod('shop', 'broken')!;
  h.api.upsert({ ...p, status: { ...p.status, phase: 'Pending' } });
  await until('skip', () => h.counts.get('repair/skip') === 1, 15_000);
});

test('none of the actions set: pods are watched, nothing is written', async (t) => {
  const h = await harness(t, {});
  populate(h.api);
  h.start();
  await h.settle();
  assert.equal(h.c.action, 'none');
  assert.deepEqual(writes(h.api), []);
  assert.equal(h.counts.size, 0);
});

test('extra selectors are sent as given, after the node selector', async (t) => {
  const h = await harness(t, { labelPods: true, labelSelectors: 'app=web', fieldSelectors: 'metadata.namespace=shop' });
  populate(h.api);
  h.start();
  await until('label', () => h.api.pod('shop', 'broken-terminated')?.metadata.labels?.['cni.istio.io/uninitialized'] === 'true', 15_000);
  await h.settle();
  assert.equal(h.api.pod('shop', 'broken-waiting')!.metadata.labels?.['cni.istio.io/uninitialized'], undefined, 'no app=web label: not watched');
  const list = h.api.requests.find((r) => r.method === 'GET')!;
  assert.equal(list.query.fieldSelector, 'metadata.namespace=shop,spec.nodeName=node-a');
  assert.equal(list.query.labelSelector, 'app=web');
});
