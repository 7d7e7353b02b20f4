// Agent servers in-process: plugin log relay over a unix socket, health, metrics, upgrade check.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { ScopeLevels } from '../../src/log/levels';
import { agentLogger } from '../../src/log/winston-backend';
import { parsePluginLogLine, startLogServer } from '../../src/agent/logserver';
import { AgentMetrics, startHealthServer } from '../../src/agent/servers';
import { ApiResponse, KubeGet, inClusterApi, nodeSelectorMatches, shouldStopCleanup } from '../../src/agent/upgrade';
import { installConfig } from '../../src/installer/config';
import { MemoryLogger } from '../../src/log/logger';
import { tempDir } from '../support/tmp';

function capture(): { lines: string[]; stream: Writable } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(...String(chunk).split('\n').filter(Boolean));
      cb();
    },
  });
  return { lines, stream };
}

function post(socketPath: string, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path: '/log', method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

test('plugin log lines: level, time and msg required; other keys kept as fields', () => {
  const e = parsePluginLogLine(JSON.stringify({ level: 'info', time: '2024-05-01T10:00:00.123456Z', msg: ' hi ', pod: 'p', namespace: 'ns', scope: 'cni' }));
  assert.deepEqual(e, { level: 'info', time: '2024-05-01T10:00:00.123000Z', msg: 'hi', fields: { namespace: 'ns', pod: 'p', scope: 'cni' } });
  assert.deepEqual(parsePluginLogLine(JSON.stringify({ level: 'fatal', time: '2024-05-01T10:00:00Z', msg: 'x' })), { dropped: 'unparsable' });
  assert.deepEqual(parsePluginLogLine(JSON.stringify({ level: 'info', time: 'yesterday', msg: 'x' })), { dropped: 'unparsable' });
  assert.deepEqual(parsePluginLogLine(JSON.stringify({ level: 'info', time: '2024-05-01T10:00:00Z' })), { dropped: 'unparsable' });
  assert.deepEqual(parsePluginLogLine('not json'), { dropped: 'unparsable' });
});

test('log.sock: root-only socket, entries relayed on the cni-plugin scope with the plugin time and pod fields', async () => {
  const dir = path.join(tempDir(path.join(os.tmpdir(), 'icts-logsock-')), 'run');
  const out = capture();
  const root = agentLogger({ levels: new ScopeLevels('info'), targets: [out.stream] }).withScope('cni-agent');
  const sock = path.join(dir, 'log.sock');
  const server = await startLogServer(sock, root.withScope('cni-plugin'), root);
  try {
    assert.equal(fs.statSync(sock).mode & 0o777, 0o600);
    const lines = [
      JSON.stringify({ level: 'info', time: '2024-05-01T10:00:00Z', msg: 'pod redirected', pod: 'web-1', namespace: 'shop' }),
      JSON.stringify({ level: 'debug', time: '2024-05-01T10:00:01Z', msg: 'below the level' }),
      JSON.stringify({ level: 'nope', time: '2024-05-01T10:00:01Z', msg: 'dropped' }),
    ];
    assert.equal(await post(sock, JSON.stringify(lines)), 200);
    assert.equal(await post(sock, '{"not":"an array"}'), 200, 'always 200');
    await new Promise((r) => setTimeout(r, 50));
    const relayed = out.lines.filter((l) => l.includes('\tcni-plugin\t'));
    assert.deepEqual(relayed, ['2024-05-01T10:00:00.000000Z\tinfo\tcni-plugin\tpod redirected\tnamespace=shop pod=web-1']);
    assert.ok(out.lines.some((l) => l.includes('failed to parse CNI plugin logs')));
  } finally {
    await server.close();
  }
  assert.equal(fs.existsSync(sock), false, 'socket removed on close');
});

test('log.sock: a stale socket is replaced; a regular file in its place is refused', async () => {
  const dir = tempDir(path.join(os.tmpdir(), 'icts-logsock-'));
  const sock = path.join(dir, 'log.sock');
  // A process that dies while listening leaves its socket file behind.
  const r = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(sock)}, () => process.kill(process.pid, 'SIGKILL'))`]);
  assert.equal(r.signal, 'SIGKILL');
  assert.ok(fs.lstatSync(sock).isSocket(), 'stale socket present');
  const log = agentLogger({ levels: new ScopeLevels('error'), targets: [capture().stream] }).withScope('x');
  const server = await startLogServer(sock, log, log);
  await server.close();
  fs.writeFileSync(sock, 'precious');
  await assert.rejects(startLogServer(sock, log, log), /not a socket/);
  assert.equal(fs.readFileSync(sock, 'utf8'), 'precious');
});

test('health: /healthz always 200, /readyz follows readiness', async () => {
  let ready = false;
  const h = await startHealthServer(() => ready, 0, '127.0.0.1');
  try {
    assert.equal((await get(`http://${h.address}/healthz`)).status, 200);
    assert.equal((await get(`http://${h.address}/readyz`)).status, 503);
    ready = true;
    assert.equal((await get(`http://${h.address}/readyz`)).status, 200);
    assert.equal((await get(`http://${h.address}/other`)).status, 404);
  } finally {
    await h.close();
  }
});

test("metrics: Istio's names on /metrics", async () => {
  const m = new AgentMetrics(false);
  m.installs.inc({ result: 'SUCCESS' });
  m.installReady.set(1);
  const s = await m.start(0, '127.0.0.1');
  try {
    const r = await get(`http://${s.address}/metrics`);
    assert.equal(r.status, 200);
    assert.match(r.body, /^istio_cni_installs_total\{result="SUCCESS"\} 1$/m);
    assert.match(r.body, /^istio_cni_install_ready 1$/m);
    assert.match(r.body, /# TYPE istio_cni_repair_pods_repaired_total counter/);
    assert.match(r.body, /^ztunnel_connected 0$/m);
  } finally {
    await s.close();
  }
});

function fakeApi(routes: Record<string, ApiResponse | Error>): KubeGet & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    async get(p: string) {
      calls.push(p);
      const r = routes[p];
      if (r instanceof Error) throw r;
      return r ?? { status: 404, body: {} };
    },
  };
}

const DS = '/apis/apps/v1/namespaces/istio-system/daemonsets/istio-cni-node';
const NODE = '/api/v1/nodes/node-a';
const nodeA = { status: 200, body: { metadata: { name: 'node-a', labels: { 'kubernetes.io/os': 'linux', pool: 'mesh' } } } };
const check = (api: KubeGet, owned = false) =>
  shouldStopCleanup({ api, namespace: 'istio-system', nodeName: 'node-a', istioOwnedCNIConfig: owned, log: new MemoryLogger(), retryDelayMs: 1 });

test('upgrade check: DaemonSet present = keep; gone, deleting, or unauthorized = clean up', async () => {
  assert.equal(await check(fakeApi({ [DS]: { status: 200, body: { metadata: {} } }, [NODE]: nodeA })), true);
  assert.equal(await check(fakeApi({})), false);
  assert.equal(await check(fakeApi({ [DS]: { status: 200, body: { metadata: { deletionTimestamp: '2024-01-01T00:00:00Z' } } } })), false);
  assert.equal(await check(fakeApi({ [DS]: { status: 401, body: {} } })), false);
});

test('upgrade check: errors default to cleanup (1 try), or to keeping an Istio-owned config (3 tries)', async () => {
  const a = fakeApi({ [DS]: new Error('connection refused') });
  assert.equal(await check(a), false);
  assert.equal(a.calls.length, 1);
  const b = fakeApi({ [DS]: { status: 500, body: {} } });
  assert.equal(await check(b, true), true);
  assert.equal(b.calls.length, 3);
});

test('upgrade check: a DaemonSet whose node affinity no longer matches this node means cleanup', async () => {
  const ds = (terms: unknown[]) => ({
    status: 200,
    body: {
      metadata: {},
      spec: { template: { spec: { affinity: { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: terms } } } } } },
    },
  });
  assert.equal(await check(fakeApi({ [DS]: ds([{ matchExpressions: [{ key: 'pool', operator: 'In', values: ['mesh'] }] }]), [NODE]: nodeA })), true);
  assert.equal(await check(fakeApi({ [DS]: ds([{ matchExpressions: [{ key: 'pool', operator: 'In', values: ['other'] }] }]), [NODE]: nodeA })), false);
});

test('node selector semantics: OR of terms, AND within, Exists/DoesNotExist/NotIn/Gt, metadata.name field', () => {
  const node = nodeA.body;
  const m = (terms: unknown[]) => nodeSelectorMatches({ nodeSelectorTerms: terms }, node);
  assert.equal(m([{ matchExpressions: [{ key: 'pool', operator: 'Exists' }] }]), true);
  assert.equal(
    m([
      {
        matchExpressions: [
          { key: 'gpu', operator: 'DoesNotExist' },
          { key: 'pool', operator: 'NotIn', values: ['x'] },
        ],
      },
    ]),
    true,
  );
  assert.equal(
    m([{ matchExpressions: [{ key: 'gpu', operator: 'Exists' }] }, { matchFields: [{ key: 'metadata.name', operator: 'In', values: ['node-a'] }] }]),
    true,
  );
  assert.equal(m([{ matchFields: [{ key: 'metadata.name', operator: 'NotIn', values: ['node-a'] }] }]), false);
  assert.equal(m([{}]), false, 'an empty term matches nothing');
  assert.equal(
    nodeSelectorMatches({ nodeSelectorTerms: [{ matchExpressions: [{ key: 'n', operator: 'Gt', values: ['3'] }] }] }, { metadata: { labels: { n: '5' } } }),
    true,
  );
  assert.throws(() => m([{ matchExpressions: [{ key: 'pool', operator: 'Near' }] }]));
});

test('in-cluster API client: bearer token from the service account, JSON back (local stand-in)', async () => {
  const sa = tempDir(path.join(os.tmpdir(), 'icts-sa-'));
  fs.writeFileSync(path.join(sa, 'token'), 'tok-123\n');
  const seen: string[] = [];
  const server = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url} ${req.headers.authorization}`);
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"kind":"DaemonSet"}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  try {
    const api = inClusterApi(
      installConfig({ k8sServiceProtocol: 'http', k8sServiceHost: '127.0.0.1', k8sServicePort: String(port), k8sServiceAccountPath: sa }),
    );
    const r = await api.get('/apis/apps/v1/namespaces/ns/daemonsets/istio-cni-node');
    assert.deepEqual(r, { status: 200, body: { kind: 'DaemonSet' } });
    assert.deepEqual(seen, ['GET /apis/apps/v1/namespaces/ns/daemonsets/istio-cni-node Bearer tok-123']);
  } finally {
    server.close();
  }
});
