// Pod lookup: retries with a fake clock, and one real HTTPS GET against a local server with a
// generated CA, checking the bearer token and the path.
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as http from 'node:http';
import * as https from 'node:https';
import { AddressInfo } from 'node:net';
import { HttpsKubeClient, KubeError, MAX_RETRY_AFTER_MS, getPodWithRetries, podPath, retryAfterMs } from '../../src/kube/client';
import { FakeKubeClient } from '../../src/kube/fake';
import { parseKubeconfig } from '../../src/kube/kubeconfig';
import { MAX_CONNECTIONS, RestClient } from '../../src/kube/rest';
import { TestPki, istioKubeconfig, makePki } from '../support/tls';

const POD = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web-1', namespace: 'shop' } };

test('retries: every failure is retried, attempts x interval, then the last error', async () => {
  const fake = new FakeKubeClient([POD]);
  fake.failures = [new KubeError('refused'), new KubeError('HTTP 503', 503), new KubeError('HTTP 404', 404)];
  const sleeps: number[] = [];
  const seen: number[] = [];
  const pod = await getPodWithRetries(fake, 'shop', 'web-1', {
    attempts: 30,
    intervalMs: 1000,
    sleep: async (ms) => void sleeps.push(ms),
    onAttemptFailed: (n) => seen.push(n),
  });
  assert.equal(pod.metadata?.name, 'web-1');
  assert.deepEqual(sleeps, [1000, 1000, 1000]);
  assert.deepEqual(seen, [1, 2, 3]);

  const down = new FakeKubeClient();
  down.failures = Array.from({ length: 50 }, () => new KubeError('connect ECONNREFUSED'));
  const sleeps2: number[] = [];
  await assert.rejects(
    getPodWithRetries(down, 'shop', 'web-1', { attempts: 30, intervalMs: 1000, sleep: async (ms) => void sleeps2.push(ms) }),
    (e: KubeError) => e.transient && /ECONNREFUSED/.test(e.message),
  );
  assert.equal(down.calls.length, 30);
  assert.equal(sleeps2.length, 29, 'no sleep after the last attempt');
  assert.ok(sleeps2.every((s) => s === 1000));
});

test('retry count and interval are configurable', async () => {
  const down = new FakeKubeClient();
  const sleeps: number[] = [];
  await assert.rejects(
    getPodWithRetries(down, 'a', 'b', { attempts: 3, intervalMs: 7, sleep: async (ms) => void sleeps.push(ms) }),
    (e: KubeError) => e.status === 404 && !e.transient,
  );
  assert.deepEqual(sleeps, [7, 7]);
  assert.equal(down.calls.length, 3);
});

test('Retry-After: the pause is at least what the server asked for, capped; other failures keep the interval', async () => {
  const fake = new FakeKubeClient([POD]);
  fake.failures = [
    new KubeError('HTTP 429', 429, 3000),
    new KubeError('HTTP 503', 503, 600_000),
    new KubeError('HTTP 429', 429, 200),
    new KubeError('refused'),
  ];
  const sleeps: number[] = [];
  await getPodWithRetries(fake, 'shop', 'web-1', { attempts: 30, intervalMs: 1000, sleep: async (ms) => void sleeps.push(ms) });
  assert.deepEqual(sleeps, [3000, MAX_RETRY_AFTER_MS, 1000, 1000]);
  assert.equal(retryAfterMs('2'), 2000);
  assert.equal(retryAfterMs(' 5 '), 5000);
  for (const bad of [undefined, '', '-1', '1.5', 'Wed, 21 Oct 2026 07:28:00 GMT', '9999999']) assert.equal(retryAfterMs(bad), undefined, String(bad));
});

test('pod paths are escaped', () => {
  assert.equal(podPath('shop', 'web-1'), '/api/v1/namespaces/shop/pods/web-1');
  assert.equal(podPath('a/b', 'c?d'), '/api/v1/namespaces/a%2Fb/pods/c%3Fd');
});

let pki: TestPki;
let server: https.Server;
let base: string;
const seenRequests: { path?: string; auth?: string }[] = [];
let respond: (req: http.IncomingMessage, res: http.ServerResponse) => void;

before(async () => {
  pki = makePki();
  server = https.createServer({ cert: pki.cert, key: pki.key }, (req, res) => {
    seenRequests.push({ path: req.url, auth: req.headers.authorization });
    respond(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => server?.close());

const apiLike = (req: http.IncomingMessage, res: http.ServerResponse) => {
  if (req.headers.authorization !== 'Bearer tok-abc') {
    res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'Status', message: 'Unauthorized' }));
  } else if (req.url === '/api/v1/namespaces/shop/pods/web-1') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(POD));
  } else {
    res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'Status', message: 'pods "x" not found' }));
  }
};

test("HTTPS GET with the kubeconfig's CA and bearer token", async () => {
  respond = apiLike;
  const client = new HttpsKubeClient(parseKubeconfig(istioKubeconfig(base, { caPem: pki.ca, token: 'tok-abc' }), 'kc'));
  assert.deepEqual(await client.getPod('shop', 'web-1'), POD);
  assert.deepEqual(seenRequests.at(-1), { path: '/api/v1/namespaces/shop/pods/web-1', auth: 'Bearer tok-abc' });
  await assert.rejects(client.getPod('shop', 'nope'), (e: KubeError) => e.status === 404 && /not found/.test(e.message) && !e.transient);
  client.close();
});

test('HTTPS: a wrong token is a 401; a server outside the CA is refused; insecure skips the check', async () => {
  respond = apiLike;
  const wrongToken = new HttpsKubeClient(parseKubeconfig(istioKubeconfig(base, { caPem: pki.ca, token: 'bad' }), 'kc'));
  await assert.rejects(wrongToken.getPod('shop', 'web-1'), (e: KubeError) => e.status === 401 && /Unauthorized/.test(e.message));
  const otherCa = new HttpsKubeClient(parseKubeconfig(istioKubeconfig(base, { caPem: pki.otherCa, token: 'tok-abc' }), 'kc'));
  await assert.rejects(otherCa.getPod('shop', 'web-1'), (e: KubeError) => e.status === undefined && e.transient);
  const insecure = new HttpsKubeClient(parseKubeconfig(istioKubeconfig(base, { insecure: true, token: 'tok-abc' }), 'kc'));
  assert.equal((await insecure.getPod('shop', 'web-1')).metadata?.name, 'web-1');
});

test('HTTPS: 5xx and 429 are transient (with the Retry-After), a non-JSON body and a hung server are errors', async () => {
  const client = new HttpsKubeClient(parseKubeconfig(istioKubeconfig(base, { caPem: pki.ca, token: 'tok-abc' }), 'kc'), { timeoutMs: 200 });
  respond = (_q, res) => res.writeHead(503).end('overloaded');
  await assert.rejects(client.getPod('shop', 'web-1'), (e: KubeError) => e.status === 503 && e.transient && e.retryAfterMs === undefined);
  respond = (_q, res) => res.writeHead(429, { 'retry-after': '2' }).end('{"kind":"Status","message":"slow down"}');
  await assert.rejects(client.getPod('shop', 'web-1'), (e: KubeError) => e.status === 429 && e.transient && e.retryAfterMs === 2000);
  respond = (_q, res) => res.writeHead(200).end('<html>');
  await assert.rejects(client.getPod('shop', 'web-1'), (e: KubeError) => /not JSON/.test(e.message));
  respond = () => undefined; // never answers
  await assert.rejects(client.getPod('shop', 'web-1'), (e: KubeError) => /no answer within 200 ms/.test(e.message) && e.transient);
});

test('nothing listening: a transient error', async () => {
  const srv = http.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  const client = new HttpsKubeClient({ server: `https://127.0.0.1:${port}`, insecureSkipTlsVerify: true, token: 't' });
  await assert.rejects(client.getPod('shop', 'web-1'), (e: KubeError) => e.transient && /ECONNREFUSED/.test(e.message));
});

// The plugin's GET and the agent's calls share one transport: the agent's requests get the same
// deadline, token scrubbing, Retry-After and connection cap.
test('transport: agent-style requests share the deadline, token scrubbing, Retry-After and the 8-connection pool', async () => {
  const rest = new RestClient({ server: base, ca: () => pki.ca, token: () => 'tok-abc', timeoutMs: 300 });
  try {
    respond = (q, res) =>
      res
        .writeHead(403, { 'content-type': 'application/json', 'retry-after': '3' })
        .end(JSON.stringify({ kind: 'Status', message: `forbidden: ${q.headers.authorization}` }));
    const r = await rest.request('PATCH', '/api/v1/namespaces/shop/pods/web-1/status', { body: {} });
    assert.equal(r.status, 403);
    assert.equal(r.retryAfterMs, 3000);
    assert.doesNotMatch(JSON.stringify(r.body), /tok-abc/);
    assert.match(JSON.stringify(r.body), /Bearer \[redacted\]/);

    // Headers at once, then one byte every 100 ms: the deadline still ends the request.
    respond = (_q, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const t = setInterval(() => (res.destroyed ? clearInterval(t) : res.write(' ')), 100);
    };
    await assert.rejects(rest.request('GET', '/api/v1/pods'), (e: KubeError) => /answer not complete within 300 ms/.test(e.message) && e.transient);

    // 12 calls at once against a server that holds its answers: at most 8 connections are open.
    let open = 0;
    let most = 0;
    const held: http.ServerResponse[] = [];
    respond = (_q, res) => {
      open++;
      most = Math.max(most, open);
      held.push(res);
      res.on('close', () => open--);
    };
    const slow = new RestClient({ server: base, ca: pki.ca, token: 'tok-abc', timeoutMs: 5000 });
    const calls = Array.from({ length: 12 }, () => slow.request('GET', '/api/v1/namespaces/shop/pods/web-1'));
    // Answer only once every connection the pool may open is waiting (a full batch), so `most`
    // shows the cap and not how fast TLS handshakes happen to be.
    let answered = 0;
    const release = setInterval(() => {
      if (held.length < Math.min(MAX_CONNECTIONS, 12 - answered)) return;
      answered += held.length;
      held.splice(0).forEach((res) => res.writeHead(200).end('{}'));
    }, 50);
    const answers = await Promise.all(calls);
    clearInterval(release);
    slow.close();
    assert.equal(answers.length, 12);
    assert.equal(most, MAX_CONNECTIONS, `most connections open at once: ${most}`);
  } finally {
    rest.close();
  }
});
