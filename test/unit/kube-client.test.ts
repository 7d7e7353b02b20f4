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
import { TestPki, istioKubeconfig, makePki } from '../support/tls';

const POD = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web-1', namespace: 'shop' } };

test('retries: every failure is retried, attempts x interval, then the last error', async () => {
  const fake = new FakeKubeClient([POD]);
  fake.failures = [new KubeError('refused'), new KubeError('HTTP 503', 503), new KubeError('HTTP 404', 404)];
  const sleeps: number[] = [];
  const seen: number[] = [];
  const pod = await getPodWithRetries(fake, 'shop', 'web-1', {
    attempts: 30, intervalMs: 1000, sleep: async (ms) => void sleeps.push(ms), onAttemptFailed: (n) => seen.push(n),
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
  await assert.rejects(getPodWithRetries(down, 'a', 'b', { attempts: 3, intervalMs: 7, sleep: async (ms) => void sleeps.push(ms) }),
    (e: KubeError) => e.status === 404 && !e.transient);
  assert.deepEqual(sleeps, [7, 7]);
  assert.equal(down.calls.length, 3);
});

test('Retry-After: the pause is at least what the server asked for, capped; other failures keep the interval', async () => {
  const fake = new FakeKubeClient([POD]);
  fake.failures = [new KubeError('HTTP 429', 429, 3000), new KubeError('HTTP 503', 503, 600_000), new KubeError('HTTP 429', 429, 200), new KubeError('refused')];
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

test('HTTPS GET with the kubeconfig\'s CA and bearer token', async () => {
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
