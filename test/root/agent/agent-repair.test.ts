// The agent started as a real process with REPAIR_ENABLED=true against the local API stand-in
// (HTTPS, generated CA, service-account token): broken pods on its node are labelled or deleted,
// healthy ones and other nodes' are not, the metric is scraped over HTTP, and SIGTERM closes the
// watch. Everything listens on 127.0.0.1. Repair mode (netns) is in test/root/netns/repair-netns.test.ts.
// Last, the fast path's pod cache, the other pod watch the agent runs: when it starts and when not.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { freePort, httpGet } from '../../support/http-get';
import { KubeApiStandIn, NODE, brokenTerminated, brokenWaiting, healthy, recovered, repairPod } from '../../support/kube-api';
import { makePki } from '../../support/tls';
import { until } from '../../support/until';
import { AGENT_BIN, AgentProc, agentArgs, agentDirs, startAgentProcess } from '../../support/agent-proc';

const pki = makePki();

/**
 * The agent as the DaemonSet configures it (directories and ports as environment variables), with
 * REPAIR_ENABLED=true on NODE unless `env` says otherwise; metrics on a free port.
 */
function startAgent(apiPort: number, env: Record<string, string>): Promise<AgentProc> {
  const d = agentDirs({ api: { caPem: pki.ca, token: 'repair-token\n' } });
  return startAgentProcess(d, { apiPort, metrics: true, configFromEnv: true, env: { REPAIR_ENABLED: 'true', REPAIR_NODE_NAME: NODE, ...env } }).catch((e) => {
    // Leave nothing on disk when the agent never came up.
    fs.rmSync(d.root, { recursive: true, force: true });
    throw e;
  });
}

async function stop(a: AgentProc): Promise<void> {
  const r = await a.stop();
  fs.rmSync(a.dirs.root, { recursive: true, force: true });
  assert.equal(r.code, 0, a.out.join('\n'));
}

function metric(text: string, type: string, result: string): number {
  const m = new RegExp(`^istio_cni_repair_pods_repaired_total\\{(?=[^}]*type="${type}")(?=[^}]*result="${result}")[^}]*\\} (\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

const LABEL = 'cni.istio.io/uninitialized';

test('agent process, label mode: broken pods (listed, then watched) are labelled; healthy ones and other nodes are not', async (t) => {
  const api = await new KubeApiStandIn(pki).start();
  t.after(() => api.close());
  api.token = 'repair-token';
  api.upsert(repairPod({ name: 'healthy', initStatus: healthy }));
  api.upsert(repairPod({ name: 'recovered', initStatus: recovered }));
  api.upsert(repairPod({ name: 'broken-early', initStatus: brokenWaiting }));
  api.upsert(repairPod({ name: 'broken-elsewhere', node: 'node-b', initStatus: brokenWaiting }));
  const a = await startAgent(api.port, { REPAIR_LABEL_PODS: 'true' });
  try {
    await until('broken-early labelled', () => api.pod('shop', 'broken-early')?.metadata.labels?.[LABEL] === 'true', 20_000);
    await until('watch open', () => api.openWatches === 1, 20_000);
    // A pod that breaks after the agent started arrives through the watch.
    api.upsert(repairPod({ name: 'broken-later', namespace: 'payments', initStatus: brokenTerminated }));
    await until('broken-later labelled', () => api.pod('payments', 'broken-later')?.metadata.labels?.[LABEL] === 'true', 20_000);
    for (const n of ['healthy', 'recovered', 'broken-elsewhere']) assert.equal(api.pod('shop', n)!.metadata.labels?.[LABEL], undefined, n);
    const m = await until(
      'metrics',
      async () => {
        const r = await httpGet(`http://${a.metrics}/metrics`);
        return metric(r.body, 'label', 'success') === 2 && r.body;
      },
      20_000,
    );
    assert.ok(metric(m, 'label', 'skip') >= 1, 'the MODIFIED event after the patch is a skip');
    await until('ready (the install runs alongside the repair controller)', async () => (await httpGet(`http://${a.health}/readyz`)).status === 200, 20_000);
    for (const r of api.requests) {
      assert.equal(r.authorization, 'Bearer repair-token');
      if (r.method === 'GET') assert.equal(r.query.fieldSelector, `spec.nodeName=${NODE}`);
    }
    assert.deepEqual(
      [
        ...new Set(api.requests.map((r) => `${r.method} ${r.path.replace(/\/pods\/[^/]+/, '/pods/NAME').replace(/namespaces\/[^/]+/, 'namespaces/NS')}`)),
      ].sort(),
      ['GET /api/v1/pods', 'PATCH /api/v1/namespaces/NS/pods/NAME/status', 'POST /api/v1/namespaces/NS/events'],
    );
  } finally {
    await stop(a);
  }
  await until('watch closed', () => api.openWatches === 0, 20_000);
  assert.ok(
    a.out.some((l) => /starting CNI sidecar repair controller.*action=label/.test(l)),
    a.out.join('\n'),
  );
});

test('agent process, delete mode: the broken pod is deleted with preconditions, the healthy one stays', async (t) => {
  const api = await new KubeApiStandIn(pki).start();
  t.after(() => api.close());
  api.token = 'repair-token';
  api.upsert(repairPod({ name: 'healthy', initStatus: healthy }));
  api.upsert(repairPod({ name: 'broken', initStatus: brokenWaiting }));
  const a = await startAgent(api.port, { REPAIR_DELETE_PODS: 'true', REPAIR_LABEL_PODS: 'true' });
  try {
    await until('deleted', () => api.pod('shop', 'broken') === undefined, 20_000);
    await until('metric', async () => metric((await httpGet(`http://${a.metrics}/metrics`)).body, 'delete', 'success') === 1, 20_000);
    assert.deepEqual(api.podNames(), ['shop/healthy']);
    const del = api.requests.find((r) => r.method === 'DELETE')!;
    assert.deepEqual(Object.keys((del.body as { preconditions: object }).preconditions).sort(), ['resourceVersion', 'uid']);
    assert.equal(api.requests.filter((r) => r.method === 'PATCH').length, 0, 'delete takes precedence over label');
  } finally {
    await stop(a);
  }
});

test('agent process: an unreachable API does not stop the install (logged, retried); no API address is a start-up error', async (t) => {
  const closedPort = await freePort();
  const a = await startAgent(closedPort, { REPAIR_LABEL_PODS: 'true' });
  try {
    await until('ready', async () => (await httpGet(`http://${a.health}/readyz`)).status === 200, 20_000);
    await until('a retry logged', () => a.out.some((l) => /warn\trepair\t\/api\/v1\/pods: list\/watch failed; retrying/.test(l)), 20_000);
  } finally {
    await stop(a);
  }
  const d = agentDirs({ api: { caPem: pki.ca, token: 'x' } });
  t.after(() => fs.rmSync(d.root, { recursive: true, force: true }));
  const r = spawnSync(process.execPath, [AGENT_BIN, 'agent', ...agentArgs(d), '--health-port', '0', '--monitoring-port', '0'], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', REPAIR_ENABLED: 'true' },
    encoding: 'utf8',
    timeout: 20_000,
  });
  assert.equal(r.status, 2, r.stdout + r.stderr);
  assert.match(r.stderr, /invalid KUBERNETES_SERVICE_HOST "": must be set when REPAIR_ENABLED is true/);
});

// The fast path's pod cache (src/agent/pod-cache.ts; its lookups are in
// test/root/netns/fast-path-pod-cache.test.ts): on with NODE_NAME and the API address, off otherwise.
test("agent process: NODE_NAME starts the fast path's pod cache (a watch of this node's pods); FAST_PATH_POD_CACHE=false or no NODE_NAME leaves it off", async (t) => {
  const api = await new KubeApiStandIn(pki).start();
  t.after(() => api.close());
  api.token = 'repair-token';
  api.upsert(repairPod({ name: 'here', initStatus: healthy }));
  api.upsert(repairPod({ name: 'elsewhere', node: 'node-b', initStatus: healthy }));
  const podWatches = () => api.requests.filter((r) => r.path === '/api/v1/pods' && r.query.watch === 'true');

  const a = await startAgent(api.port, { REPAIR_ENABLED: 'false', NODE_NAME: NODE });
  try {
    const synced = await until('the node pods synced', () => a.out.find((l) => l.includes('node pods synced')), 20_000);
    assert.match(synced, /pods=1\b/, synced);
    await until('the pod watch', () => podWatches().length > 0, 20_000);
    for (const r of api.requests.filter((x) => x.path === '/api/v1/pods')) assert.equal(r.query.fieldSelector, `spec.nodeName=${NODE}`);
    const m = await httpGet(`http://${a.metrics}/metrics`);
    assert.match(m.body, /# TYPE istio_cni_ts_fast_path_pod_lookups_total counter/);
  } finally {
    await stop(a);
  }

  for (const [env, reason] of [
    [{ NODE_NAME: NODE, FAST_PATH_POD_CACHE: 'false' }, 'disabled (FAST_PATH_POD_CACHE=false)'],
    [{}, 'off: NODE_NAME is not set'],
  ] as const) {
    const before = api.requests.length;
    const b = await startAgent(api.port, { REPAIR_ENABLED: 'false', ...env });
    try {
      await until(`the log says the cache is ${reason}`, () => b.out.find((l) => l.includes(`fast path pod cache ${reason}`)), 20_000);
      await until('ready', async () => (await httpGet(`http://${b.health}/readyz`)).status === 200, 20_000);
      assert.deepEqual(
        api.requests.slice(before).filter((r) => r.path === '/api/v1/pods'),
        [],
        'no pod list or watch',
      );
    } finally {
      await stop(b);
    }
  }
});
