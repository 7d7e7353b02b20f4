// The agent's list+watch informer against the local API stand-in over TLS: paged list, the
// selectors on every call, a chunked watch delivering ADDED/MODIFIED/DELETED, re-watch from the
// last version when the server ends the stream, relist after 410 (emitting deletes for what
// vanished), back-off after errors, the rotating token read per request, and stop.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Informer, KubeObject } from '../../src/kube/informer';
import { RestClient, inClusterRest } from '../../src/kube/rest';
import { MemoryLogger } from '../../src/log/logger';
import { parseAgentConfig } from '../../src/agent/config';
import { KubeApiStandIn, NODE, Obj, repairPod } from '../support/kube-api';
import { makePki } from '../support/tls';
import { tempDir } from '../support/tmp';
import { until } from '../support/until';

const pki = makePki();

interface Seen {
  log: string[];
}

function setup(api: KubeApiStandIn, opts: { token?: () => string; watchTimeoutSeconds?: number } = {}) {
  const rest = new RestClient({ server: api.url, ca: () => pki.ca, token: opts.token ?? (() => 'tok') });
  const log = new MemoryLogger();
  const inf = new Informer<Obj & KubeObject>(rest, {
    resourcePath: '/api/v1/pods',
    fieldSelector: `spec.nodeName=${NODE}`,
    labelSelector: 'app!=skip',
    log,
    pageSize: 2,
    watchTimeoutSeconds: () => opts.watchTimeoutSeconds ?? 30,
    backoffMinMs: 20,
    backoffMaxMs: 100,
  });
  const seen: Seen = { log: [] };
  inf.addHandler({
    add: (o) => seen.log.push(`add ${o.metadata.name}`),
    update: (a, b) => seen.log.push(`update ${b.metadata.name} ${a.metadata.resourceVersion}->${b.metadata.resourceVersion}`),
    delete: (o) => seen.log.push(`delete ${o.metadata.name}`),
  });
  const ac = new AbortController();
  return { rest, log, inf, seen, ac, run: () => inf.run(ac.signal) };
}

test('paged list with selectors, then a chunked watch: adds, updates, deletes, other nodes filtered out', async (t) => {
  const api = await new KubeApiStandIn(pki).start();
  t.after(() => api.close());
  api.token = 'tok';
  for (const n of ['p1', 'p2', 'p3']) api.upsert(repairPod({ name: n }));
  api.upsert(repairPod({ name: 'elsewhere', node: 'node-b' }));
  api.upsert(repairPod({ name: 'skipped', labels: { app: 'skip' } }));
  const { inf, seen, ac, run, rest } = setup(api);
  const running = run();
  await inf.synced;
  assert.deepEqual(seen.log, ['add p1', 'add p2', 'add p3']);
  assert.deepEqual(
    inf
      .list()
      .map((p) => p.metadata.name)
      .sort(),
    ['p1', 'p2', 'p3'],
  );
  const lists = api.requests.filter((r) => r.method === 'GET' && r.query.watch === undefined);
  assert.equal(lists.length, 2, 'two pages of 2');
  assert.equal(lists[1].query.continue !== undefined, true);
  for (const r of api.requests) {
    assert.equal(r.query.fieldSelector, 'spec.nodeName=node-a');
    assert.equal(r.query.labelSelector, 'app!=skip');
    assert.equal(r.authorization, 'Bearer tok');
  }
  await until('watch open', () => api.openWatches === 1, 15_000);
  const w = api.requests.find((r) => r.query.watch === 'true')!;
  assert.equal(w.query.resourceVersion, String(api.resourceVersion));
  assert.equal(w.query.allowWatchBookmarks, 'true');
  assert.equal(w.query.timeoutSeconds, '30');

  api.upsert(repairPod({ name: 'p4' }));
  const p1 = api.pod('shop', 'p1')!;
  api.upsert({ ...p1, status: { phase: 'Running' } });
  api.remove('shop', 'p2');
  api.upsert(repairPod({ name: 'p5', node: 'node-b' }));
  await until('three events', () => seen.log.length === 6, 15_000);
  assert.deepEqual(seen.log.slice(3), ['add p4', `update p1 ${p1.metadata.resourceVersion}->${Number(p1.metadata.resourceVersion) + 6}`, 'delete p2']);
  assert.equal(inf.get('shop/p1')?.status?.phase, 'Running');
  assert.equal(inf.get('shop/p2'), undefined);
  assert.equal(inf.get('shop/p5'), undefined);
  ac.abort();
  await running;
  rest.close();
  await until('watch closed on stop', () => api.openWatches === 0, 15_000);
});

test('a watch the server ends is re-opened from the last version seen; changes in between are not lost', async (t) => {
  const api = await new KubeApiStandIn(pki).start();
  t.after(() => api.close());
  api.upsert(repairPod({ name: 'p1' }));
  const { inf, seen, ac, run, rest, log } = setup(api);
  const running = run();
  await inf.synced;
  await until('watch open', () => api.openWatches === 1, 15_000);
  api.upsert(repairPod({ name: 'p2' }));
  await until('p2', () => seen.log.includes('add p2'), 15_000);
  const rvAfterP2 = api.resourceVersion;
  api.dropWatches();
  api.upsert(repairPod({ name: 'p3' })); // while no watch is open
  await until('p3', () => seen.log.includes('add p3'), 15_000);
  const watches = api.requests.filter((r) => r.query.watch === 'true');
  assert.equal(watches.length, 2);
  assert.equal(watches[1].query.resourceVersion, String(rvAfterP2));
  assert.equal(inf.stats.lists, 1, 'no relist needed');
  assert.equal(log.entries.filter((e) => e.level === 'warn').length, 0);
  ac.abort();
  await running;
  rest.close();
});

test('410 Gone (ERROR event or answer) relists and emits deletes for pods that vanished meanwhile', async (t) => {
  const api = await new KubeApiStandIn(pki).start();
  t.after(() => api.close());
  api.upsert(repairPod({ name: 'keep' }));
  api.upsert(repairPod({ name: 'gone' }));
  const { inf, seen, ac, run, rest } = setup(api);
  const running = run();
  await inf.synced;
  await until('watch open', () => api.openWatches === 1, 15_000);
  // As after a long disconnect: history compacted, the watch expires, the pod went meanwhile.
  api.dropWatches();
  api.remove('shop', 'gone');
  api.compact();
  await until('relist', () => inf.stats.relistsAfterGone === 1 && seen.log.includes('delete gone'), 15_000);
  assert.deepEqual(
    inf.list().map((p) => p.metadata.name),
    ['keep'],
  );
  await until('watch open again', () => api.openWatches === 1, 15_000);
  // Now the ERROR-event form.
  api.expireWatches();
  api.compact();
  await until('second relist', () => inf.stats.relistsAfterGone === 2, 15_000);
  assert.ok(seen.log.includes(`update keep ${api.pod('shop', 'keep')!.metadata.resourceVersion}->${api.pod('shop', 'keep')!.metadata.resourceVersion}`));
  ac.abort();
  await running;
  rest.close();
});

test('reflector: a watch ended by the server at timeoutSeconds resumes from the last version (no relist); its bookmark is taken', async (t) => {
  const api = await new KubeApiStandIn(pki).start();
  t.after(() => api.close());
  api.upsert(repairPod({ name: 'p1' }));
  const { inf, seen, ac, run, rest } = setup(api, { watchTimeoutSeconds: 1 });
  const running = run();
  await inf.synced;
  await until('watch open', () => api.openWatches === 1, 15_000);
  // Changes the selection does not see (another node) move the version on; the server's closing
  // bookmark carries it.
  api.upsert(repairPod({ name: 'elsewhere', node: 'node-b' }));
  const rv = api.resourceVersion;
  await until(
    'the server ended the first watch at its timeout',
    () => api.sent.timeouts >= 1 && api.requests.filter((r) => r.query.watch === 'true').length >= 2,
    15_000,
  );
  const watches = api.requests.filter((r) => r.query.watch === 'true');
  assert.equal(watches[0].query.timeoutSeconds, '1');
  assert.equal(watches[1].query.resourceVersion, String(rv), "resumed from the bookmark's version");
  assert.equal(inf.stats.lists, 1, 'no relist');
  assert.equal(inf.stats.relistsAfterGone, 0);
  assert.ok(api.sent.bookmarks >= 1);
  assert.deepEqual(seen.log, ['add p1'], 'a bookmark is not an event for the handlers');
  ac.abort();
  await running;
  rest.close();
});

test('reflector: BOOKMARK events advance the version, so a later watch survives compaction without a relist', async (t) => {
  const api = await new KubeApiStandIn(pki).start();
  t.after(() => api.close());
  api.upsert(repairPod({ name: 'p1' }));
  const { inf, ac, run, rest } = setup(api);
  const running = run();
  await inf.synced;
  await until('watch open', () => api.openWatches === 1, 15_000);
  for (let i = 0; i < 5; i++) api.upsert(repairPod({ name: `other-${i}`, node: 'node-b' })); // invisible to this watch
  api.bookmark();
  const rv = api.resourceVersion;
  await new Promise((r) => setTimeout(r, 200));
  // History before the bookmark is compacted: without the bookmark, resuming from the list's
  // version would be 410 and a full relist.
  api.compact();
  api.dropWatches();
  await until('watch again', () => api.requests.filter((r) => r.query.watch === 'true').length === 2 && api.openWatches === 1, 15_000);
  assert.equal(api.requests.filter((r) => r.query.watch === 'true')[1].query.resourceVersion, String(rv));
  assert.equal(inf.stats.lists, 1, 'no relist');
  assert.equal(inf.stats.relistsAfterGone, 0);
  ac.abort();
  await running;
  rest.close();
});

test('reflector: paged list (limit/continue); a 410 on a continue token lists again in full', async (t) => {
  const api = await new KubeApiStandIn(pki).start();
  t.after(() => api.close());
  for (const n of ['p1', 'p2', 'p3', 'p4', 'p5']) api.upsert(repairPod({ name: n }));
  // While the client reads the first page, a change lands and history is compacted: the first
  // page's continue token is now too old (410 Expired).
  api.afterListPage = (n) => {
    if (n !== 1) return;
    api.upsert(repairPod({ name: 'p6' }));
    api.compact();
  };
  const { inf, ac, run, rest } = setup(api);
  const running = run();
  await inf.synced;
  const lists = api.requests.filter((r) => r.path === '/api/v1/pods' && r.query.watch === undefined);
  assert.equal(lists[0].query.limit, '2');
  assert.ok(lists[1].query.continue, 'the second page asked with the continue token');
  assert.equal(lists[2].query.continue, undefined, 'then a full list, no continue token');
  assert.equal(lists[2].query.limit, undefined, '... and no limit');
  assert.deepEqual(
    inf
      .list()
      .map((p) => p.metadata.name)
      .sort(),
    ['p1', 'p2', 'p3', 'p4', 'p5', 'p6'],
  );
  assert.equal(inf.stats.failures, 0, 'not a failure: a relist at once, no back-off');
  ac.abort();
  await running;
  rest.close();
});

test('API errors are retried with back-off and logged; the token is re-read for every request', async (t) => {
  const api = await new KubeApiStandIn(pki).start();
  t.after(() => api.close());
  api.upsert(repairPod({ name: 'p1' }));
  api.failures.push({ method: 'GET', path: /^\/api\/v1\/pods$/, status: 500, times: 2 });
  let token = 'old';
  api.token = 'new';
  const { inf, ac, run, rest, log } = setup(api, { token: () => token });
  const running = run();
  await until('two failures', () => inf.stats.failures >= 2, 15_000);
  assert.equal(inf.hasSynced(), false);
  token = 'new'; // rotated on disk
  await inf.synced;
  assert.ok(log.entries.some((e) => e.level === 'warn' && /list\/watch failed; retrying in \d+ ms/.test(e.msg)));
  assert.ok(api.requests.some((r) => r.authorization === 'Bearer old') && api.requests.some((r) => r.authorization === 'Bearer new'));
  ac.abort();
  await running;
  rest.close();
});

test('in-cluster client: TLS with the service account CA and token; a CA it does not trust fails', async (t) => {
  const api = await new KubeApiStandIn(pki).start();
  t.after(() => api.close());
  api.token = 'sa-token';
  api.upsert(repairPod({ name: 'p1' }));
  const sa = tempDir(path.join(os.tmpdir(), 'icts-sa-'));
  t.after(() => fs.rmSync(sa, { recursive: true, force: true }));
  fs.writeFileSync(path.join(sa, 'token'), 'sa-token\n');
  fs.writeFileSync(path.join(sa, 'ca.crt'), pki.ca);
  const env = { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(api.port) };
  const cfg = parseAgentConfig({ 'service-account-dir': sa }, env);
  const rest = inClusterRest(cfg.install);
  const r = await rest.request('GET', '/api/v1/pods', { query: { fieldSelector: 'spec.nodeName=node-a' } });
  assert.equal(r.status, 200);
  assert.equal((r.body as { items: unknown[] }).items.length, 1);
  rest.close();
  fs.writeFileSync(path.join(sa, 'ca.crt'), pki.otherCa);
  const bad = inClusterRest(cfg.install);
  await assert.rejects(bad.request('GET', '/api/v1/pods'), /certificate|self.signed|unable to verify/i);
  bad.close();
  assert.throws(() => inClusterRest(parseAgentConfig({}, {}).install), /KUBERNETES_SERVICE_HOST not set/);
});
