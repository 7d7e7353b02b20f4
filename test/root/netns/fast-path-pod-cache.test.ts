// The fast path's pod cache (src/agent/pod-cache.ts): with this node's pods watched, an ADD
// through the agent's handler programs the pod netns without a GET of the pod, and the rules are
// exactly those of an ADD that did GET it. The cache answers only what it can vouch for: another
// UID in CNI_ARGS (the pod was deleted and created again under the same name), no UID at all, a
// pod of another node, or a watch that failed all fall back to the GET. Real netns, real rules,
// the API stand-in over TLS. Needs root; fails loudly without it.
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { agentCniHandler } from '../../../src/agent/cni-server';
import { ScopeLevels } from '../../../src/log/levels';
import { agentLogger } from '../../../src/log/winston-backend';
import { NodePodCache } from '../../../src/agent/pod-cache';
import { NodePods } from '../../../src/agent/node-pods';
import { MemoryLogger } from '../../../src/log/logger';
import { KUBECONFIG_NAME } from '../../../src/kube/kubeconfig';
import { RestClient } from '../../../src/kube/rest';
import { cniEnv, pluginConf, sidecarPod } from '../../support/cni-fakes';
import { KubeApiStandIn, NODE, Obj } from '../../support/kube-api';
import { inNetns, makeNetns, requireRootAndTools } from '../../support/root';
import { istioKubeconfig, makePki } from '../../support/tls';
import { tempDir } from '../../support/tmp';
import { until } from '../../support/until';

const TOKEN = 'pod-cache-test-token';
let api: KubeApiStandIn;
let runDir: string;
let cache: NodePodCache;
let pods: NodePods;
const pluginLog = agentLogger({ levels: new ScopeLevels('info'), targets: [new PassThrough().resume()] }).withScope('cni-plugin');
const netnses: { remove(): void }[] = [];

function podObj(name: string, uid: string, node = NODE): Obj {
  const p = sidecarPod({ name, namespace: 'shop' }) as Obj;
  p.metadata.uid = uid;
  p.spec = { ...p.spec, nodeName: node };
  return p;
}

const podGets = (name: string) => api.requests.filter((r) => r.method === 'GET' && r.path === `/api/v1/namespaces/shop/pods/${name}`).length;

/** One ADD through the agent's handler (with or without the cache) into a fresh netns. */
async function add(name: string, uid: string | undefined, withCache = true): Promise<{ ruleset: string; exitCode: number; stdout: string }> {
  const ns = makeNetns('podcache');
  netnses.push(ns);
  const handler = agentCniHandler(pluginLog, { runDir, pods: withCache ? cache : undefined });
  try {
    const env = cniEnv('ADD', {
      CNI_NETNS: ns.path,
      CNI_ARGS: `K8S_POD_NAMESPACE=shop;K8S_POD_NAME=${name};K8S_POD_INFRA_CONTAINER_ID=c-${name}${uid === undefined ? '' : `;K8S_POD_UID=${uid}`}`,
    });
    const prevResult = { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: ns.path }], ips: [{ address: '10.9.0.2/24', interface: 0 }] };
    const stdin = pluginConf(runDir, prevResult, { pod_lookup_attempts: 1, pod_lookup_interval_ms: 10 });
    const r = await handler(env, stdin);
    // The result echoes prevResult, whose sandbox is this netns: named alike for comparing.
    return { exitCode: r.exitCode, stdout: r.stdout.split(ns.path).join('<netns>'), ruleset: inNetns(ns.name, ['nft', 'list', 'ruleset']) };
  } finally {
    handler.close();
  }
}

before(async () => {
  requireRootAndTools('ip', 'nft');
  const pki = makePki();
  api = await new KubeApiStandIn(pki).start();
  api.token = TOKEN;
  runDir = tempDir(path.join(os.tmpdir(), 'icts-podcache-'));
  fs.writeFileSync(path.join(runDir, KUBECONFIG_NAME), istioKubeconfig(api.url, { caPem: pki.ca, token: TOKEN }), { mode: 0o600 });
  api.upsert(podObj('web-1', 'u-1'));
  api.upsert(podObj('other-node', 'u-9', 'node-b'));
  const rest = new RestClient({ server: api.url, ca: () => pki.ca, token: () => TOKEN });
  pods = new NodePods(rest, NODE, new MemoryLogger(), { backoffMinMs: 50, backoffMaxMs: 200, watchTimeoutSeconds: () => 60 }).start();
  cache = new NodePodCache(pods.subscribe());
  await pods.informer.synced;
});

after(async () => {
  await pods?.stop();
  await api?.close();
  for (const ns of netnses) ns.remove();
});

test("the informer asks only for this node's pods", () => {
  const lists = api.requests.filter((r) => r.path === '/api/v1/pods');
  assert.ok(lists.length >= 1);
  for (const r of lists) assert.equal(r.query.fieldSelector, `spec.nodeName=${NODE}`);
  assert.equal(pods.informer.get('shop/other-node'), undefined, 'a pod of another node is not cached');
});

test("a cached pod with the runtime's UID: ADD applies the rules with no GET, and they equal a GET-backed ADD's", async () => {
  const before = podGets('web-1');
  const hitsBefore = cache.stats.hits;
  const cached = await add('web-1', 'u-1');
  assert.equal(cached.exitCode, 0, cached.stdout);
  assert.equal(podGets('web-1'), before, 'no GET of the pod');
  assert.equal(cache.stats.hits, hitsBefore + 1);
  assert.match(cached.ruleset, /table inet istio-/, 'the sidecar tables are in the netns');

  const fetched = await add('web-1', 'u-1', false);
  assert.equal(fetched.exitCode, 0, fetched.stdout);
  assert.equal(podGets('web-1'), before + 1, 'without the cache: one GET');
  assert.equal(cached.ruleset, fetched.ruleset, 'same rules either way');
  assert.equal(cached.stdout, fetched.stdout, 'same CNI result either way');
});

test('a pod created after the list is answered from the watch', async () => {
  api.upsert(podObj('web-2', 'u-2'));
  await until('the watch delivered web-2', () => pods.informer.get('shop/web-2') !== undefined, 15_000);
  const r = await add('web-2', 'u-2');
  assert.equal(r.exitCode, 0, r.stdout);
  assert.equal(podGets('web-2'), 0);
});

test("what the cache cannot vouch for goes to the API: another UID, no UID, another node's pod", async () => {
  const misses = cache.stats.misses;
  // Deleted and created again under the same name: the runtime's UID is the new one, the cache
  // still holds (or holds no longer) the old one; the API has the truth.
  const r1 = await add('web-1', 'u-1-recreated');
  assert.equal(r1.exitCode, 0, r1.stdout);
  const r2 = await add('web-1', undefined);
  assert.equal(r2.exitCode, 0, r2.stdout);
  const getsBefore = podGets('other-node');
  const r3 = await add('other-node', 'u-9');
  assert.equal(r3.exitCode, 0, r3.stdout);
  assert.equal(podGets('other-node'), getsBefore + 1);
  assert.equal(cache.stats.misses, misses + 3);
});

test('after a watch failure the cache is not trusted until a list succeeds again', async () => {
  api.failures.push({ method: 'GET', path: /^\/api\/v1\/pods$/, status: 500, times: 3 });
  api.dropWatches();
  await until('the informer noticed the failure', () => !pods.informer.isLive(), 15_000);
  const before = podGets('web-1');
  const r = await add('web-1', 'u-1');
  assert.equal(r.exitCode, 0, r.stdout);
  assert.equal(podGets('web-1'), before + 1, 'answered by a GET while the cache may be stale');
  await until('the informer listed again', () => pods.informer.isLive(), 15_000);
  const r2 = await add('web-1', 'u-1');
  assert.equal(r2.exitCode, 0, r2.stdout);
  assert.equal(podGets('web-1'), before + 1, 'the cache answers again');
});
