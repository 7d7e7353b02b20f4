// The agent's shared watch of the node's pods (src/agent/node-pods.ts) and the selectors its
// consumers filter with (src/kube/selectors.ts): a consumer's view and events are what a watch
// with its own selector would give, a late subscriber gets the cached pods, one list and one
// watch serve every subscriber.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { NodePods } from '../../src/agent/node-pods';
import { Pod } from '../../src/kube/pod';
import { RestClient } from '../../src/kube/rest';
import { SelectorError, labelSelector, podFieldSelector } from '../../src/kube/selectors';
import { MemoryLogger } from '../../src/log/logger';
import { KubeApiStandIn, NODE, repairPod } from '../support/kube-api';
import { until } from '../support/until';

test('label selectors: equality, inequality, set-based, existence, as the API server reads them', () => {
  const l = { app: 'web', tier: 'front', 'istio.io/rev': 'canary' };
  const yes = [
    '',
    'app=web',
    'app==web',
    'app!=db',
    'nope!=x',
    'app in (web, db)',
    'app notin (db)',
    'nope notin (x)',
    'tier',
    '!nope',
    'app=web,tier in (front),istio.io/rev',
  ];
  const no = ['app=db', 'app!=web', 'app in (db)', 'nope in (x)', 'app notin (web)', 'nope', '!app', 'app=web,tier=back'];
  for (const s of yes) assert.equal(labelSelector(s)(l), true, s);
  for (const s of no) assert.equal(labelSelector(s)(l), false, s);
  assert.equal(labelSelector('app')(null), false);
  for (const bad of ['app in web', 'a=b=c', '=x'])
    assert.throws(
      () => labelSelector(bad),
      (e: Error) => e instanceof SelectorError && e.message.includes(JSON.stringify(bad)),
      bad,
    );
});

test('pod field selectors: the fields the API server accepts for pods; others are an error naming them', () => {
  const p: Pod = { metadata: { name: 'a', namespace: 'shop' }, spec: { nodeName: 'n1', hostNetwork: true }, status: { phase: 'Running', podIP: '10.0.0.1' } };
  for (const s of [
    '',
    'metadata.name=a',
    'metadata.namespace==shop',
    'spec.nodeName=n1,status.phase!=Failed',
    'spec.hostNetwork=true',
    'status.podIP=10.0.0.1',
    'spec.restartPolicy=',
  ])
    assert.equal(podFieldSelector(s)(p), true, s);
  for (const s of ['metadata.name=b', 'status.phase=Pending', 'spec.hostNetwork=false']) assert.equal(podFieldSelector(s)(p), false, s);
  assert.throws(() => podFieldSelector('metadata.labels=x'), /pods have no selectable field "metadata.labels"/);
});

test('subscribers: filtered views and events as their own selector would give; late subscribers replayed; one list and one watch', async (t) => {
  const api = await new KubeApiStandIn().start();
  t.after(() => api.close());
  api.upsert(repairPod({ name: 'a', labels: { app: 'web' } }));
  api.upsert(repairPod({ name: 'b', labels: { app: 'db' } }));
  api.upsert(repairPod({ name: 'other', node: 'node-b', labels: { app: 'web' } }));
  const pods = new NodePods(new RestClient({ server: api.url }), NODE, new MemoryLogger(), { backoffMinMs: 20, watchTimeoutSeconds: () => 30 });
  t.after(() => pods.stop());
  const events: string[] = [];
  const web = labelSelector('app=web');
  const view = pods.subscribe((p) => web(p.metadata?.labels), {
    add: (p) => events.push(`add ${p.metadata?.name}`),
    update: (_o, p) => events.push(`update ${p.metadata?.name}`),
    delete: (p) => events.push(`delete ${p.metadata?.name}`),
  });
  const all = pods.subscribe();
  pods.start();
  await view.synced;
  assert.deepEqual(events, ['add a']);
  assert.deepEqual(
    all
      .list()
      .map((p) => p.metadata?.name)
      .sort(),
    ['a', 'b'],
  );
  assert.equal(view.get('shop/b'), undefined, 'b is cached but not in this view');
  assert.ok(all.get('shop/b'));

  // b starts matching (an add for this view), a stops matching (a delete), both are updates to `all`.
  api.upsert({ ...api.pod('shop', 'b')!, metadata: { ...api.pod('shop', 'b')!.metadata, labels: { app: 'web' } } });
  api.upsert({ ...api.pod('shop', 'a')!, metadata: { ...api.pod('shop', 'a')!.metadata, labels: { app: 'db' } } });
  await until('two transitions', () => events.length === 3, 10_000);
  assert.deepEqual(events, ['add a', 'add b', 'delete a']);
  assert.deepEqual(
    view.list().map((p) => p.metadata?.name),
    ['b'],
  );

  const late: string[] = [];
  pods.subscribe(() => true, { add: (p) => late.push(p.metadata?.name ?? '') });
  assert.deepEqual(late.sort(), ['a', 'b'], 'a late subscriber is told about the cached pods');

  const podCalls = api.requests.filter((r) => r.path === '/api/v1/pods');
  assert.equal(podCalls.filter((r) => r.query.watch !== 'true').length, 1, 'one list');
  assert.equal(podCalls.filter((r) => r.query.watch === 'true').length, 1, 'one watch');
});
