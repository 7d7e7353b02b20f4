// The plugin's ambient branch through handleCni with fake dependencies and a local agent socket:
// detection (pod and namespace, selectors, 2 or 31 attempts), the event POSTed in Istio's JSON,
// and ADD failing clearly when the agent cannot be reached or refuses.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { KubeClient, KubeError, Namespace } from '../../src/kube/client';
import { Pod } from '../../src/kube/pod';
import { ambientBranch } from '../../src/plugin/ambient';
import { handleCni } from '../../src/plugin/istio';
import { cniEnv, fakes, netconf, sidecarPod } from '../support/cni-fakes';
import { tempDir } from '../support/tmp';

const dir = tempDir(path.join(os.tmpdir(), 'icts-plugin-amb-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;

interface Agent {
  socket: string;
  bodies: string[];
  close(): Promise<void>;
}

async function agent(answer: (body: string) => [number, string] = () => [200, '']): Promise<Agent> {
  const socket = path.join(dir, `ev-${n++}.sock`);
  const bodies: string[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      bodies.push(`${req.method} ${req.url} ${req.headers['content-type']} ${body}`);
      const [code, text] = answer(body);
      res.writeHead(code).end(text);
    });
  });
  await new Promise<void>((r) => server.listen(socket, r));
  return { socket, bodies, close: () => new Promise<void>((r) => server.close(() => r())) };
}

function plainPod(labels: Record<string, string> = {}, name = 'web-1'): Pod {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'shop', labels, annotations: {} }, spec: { containers: [{ name: 'app' }] } };
}

function setup(pods: Pod[], nsLabels: Record<string, string> | undefined, socket: string) {
  const f = fakes(pods);
  const nsCalls: string[] = [];
  (f.kube as KubeClient).getNamespace = async (name: string): Promise<Namespace> => {
    nsCalls.push(name);
    if (nsLabels === undefined) throw new KubeError(`namespaces "${name}" not found`, 404);
    return { metadata: { name, labels: nsLabels } };
  };
  f.deps.ambient = ambientBranch({ socketPath: () => socket });
  return { f, nsCalls };
}

const AMBIENT = {
  ambient_enabled: true,
  enablement_selectors: [
    { podSelector: { matchLabels: { 'istio.io/dataplane-mode': 'ambient' } } },
    {
      podSelector: { matchExpressions: [{ key: 'istio.io/dataplane-mode', operator: 'NotIn', values: ['none'] }] },
      namespaceSelector: { matchLabels: { 'istio.io/dataplane-mode': 'ambient' } },
    },
  ],
};

test('an ambient pod is handed to the agent: POST /cmdadd with the event, prevResult passed through, no sidecar rules', async () => {
  const a = await agent();
  try {
    const { f, nsCalls } = setup([plainPod({ 'istio.io/dataplane-mode': 'ambient' })], {}, a.socket);
    const out = await handleCni(cniEnv('ADD'), netconf(AMBIENT), f.deps);
    assert.equal(out.exitCode, 0, out.stdout);
    assert.equal(JSON.parse(out.stdout).ips[0].address, '10.0.0.2/24');
    assert.deepEqual(a.bodies, [
      'POST /cmdadd application/json {"Netns":"/var/run/netns/pod","PodName":"web-1","PodNamespace":"shop","IPs":[{"Interface":0,"Address":{"IP":"10.0.0.2","Mask":"////AA=="},"Gateway":"10.0.0.1"}]}',
    ]);
    assert.deepEqual(f.kube.calls, ['shop/web-1'], 'one pod GET: the sidecar path never ran');
    assert.deepEqual(nsCalls, ['shop']);
    assert.equal(f.rules.applied.length, 0);
  } finally {
    await a.close();
  }
});

test('namespace label: pods enrolled unless they opt out; sidecar pods in an ambient namespace take the sidecar path', async () => {
  const a = await agent();
  try {
    let s = setup([plainPod()], { 'istio.io/dataplane-mode': 'ambient' }, a.socket);
    assert.equal((await handleCni(cniEnv('ADD'), netconf(AMBIENT), s.f.deps)).exitCode, 0);
    assert.equal(a.bodies.length, 1);

    s = setup([plainPod({ 'istio.io/dataplane-mode': 'none' })], { 'istio.io/dataplane-mode': 'ambient' }, a.socket);
    assert.equal((await handleCni(cniEnv('ADD'), netconf(AMBIENT), s.f.deps)).exitCode, 0);
    assert.equal(a.bodies.length, 1, 'opted out: no event');

    s = setup([sidecarPod()], { 'istio.io/dataplane-mode': 'ambient' }, a.socket);
    const out = await handleCni(cniEnv('ADD'), netconf(AMBIENT), s.f.deps);
    assert.equal(out.exitCode, 0, out.stdout);
    assert.equal(a.bodies.length, 1, 'sidecar pod: no event');
    assert.ok(s.f.rules.applied.length > 0, 'sidecar capture applied');
  } finally {
    await a.close();
  }
});

test('the agent refuses (500) or cannot be reached: ADD fails with code 108 and says why', async () => {
  const a = await agent(() => [500, 'no ztunnel connection\n']);
  try {
    const { f } = setup([plainPod({ 'istio.io/dataplane-mode': 'ambient' })], {}, a.socket);
    const out = await handleCni(cniEnv('ADD'), netconf(AMBIENT), f.deps);
    assert.equal(out.exitCode, 1);
    const e = JSON.parse(out.stdout);
    assert.equal(e.code, 108);
    assert.equal(e.msg, 'istio-cni cmdAdd failed to contact node Istio CNI agent');
    assert.equal(e.details, 'unable to push CNI event (status code 500): no ztunnel connection');
  } finally {
    await a.close();
  }
  const { f } = setup([plainPod({ 'istio.io/dataplane-mode': 'ambient' })], {}, path.join(dir, 'nobody-listens.sock'));
  const out = await handleCni(cniEnv('ADD'), netconf(AMBIENT), f.deps);
  const e = JSON.parse(out.stdout);
  assert.equal(e.code, 108);
  assert.match(e.details, /nobody-listens\.sock.*ENOENT.*is the istio-cni node agent running/);
});

test('lookup failures: 2 attempts then not ambient (sidecar path goes on); with enable_ambient_detection_retry 31 attempts then ADD fails', async () => {
  const a = await agent();
  try {
    let s = setup([plainPod({ 'istio.io/dataplane-mode': 'ambient' })], {}, a.socket);
    s.f.kube.failures = [new KubeError('HTTP 503', 503), new KubeError('HTTP 503', 503)];
    let out = await handleCni(cniEnv('ADD'), netconf(AMBIENT), s.f.deps);
    assert.equal(out.exitCode, 0, out.stdout);
    assert.deepEqual(s.f.sleeps, [1000], 'one pause between the two attempts');
    assert.equal(a.bodies.length, 0, 'treated as not ambient');
    assert.ok(s.f.logs.some((l) => l.level === 'error' && /failed to check if pod is ambient/.test(l.msg)));

    s = setup([plainPod({ 'istio.io/dataplane-mode': 'ambient' })], {}, a.socket);
    s.f.kube.failures = Array.from({ length: 31 }, () => new KubeError('HTTP 503', 503));
    out = await handleCni(cniEnv('ADD'), netconf({ ...AMBIENT, enable_ambient_detection_retry: true }), s.f.deps);
    assert.equal(out.exitCode, 1);
    assert.equal(JSON.parse(out.stdout).code, 11, 'API unavailable: try again later');
    assert.equal(s.f.sleeps.length, 30);

    s = setup([plainPod({ 'istio.io/dataplane-mode': 'ambient' })], undefined, a.socket);
    out = await handleCni(cniEnv('ADD'), netconf({ ...AMBIENT, enable_ambient_detection_retry: true }), s.f.deps);
    assert.equal(JSON.parse(out.stdout).code, 109, 'namespace not found on every attempt');
    assert.match(JSON.parse(out.stdout).details, /nsErr=namespaces "shop" not found/);
  } finally {
    await a.close();
  }
});

test('no prevResult: the event carries IPs null', async () => {
  const a = await agent();
  try {
    const { f } = setup([plainPod({ 'istio.io/dataplane-mode': 'ambient' })], {}, a.socket);
    const conf = JSON.parse(netconf(AMBIENT)) as Record<string, unknown>;
    delete conf.prevResult;
    const out = await handleCni(cniEnv('ADD'), JSON.stringify(conf), f.deps);
    assert.equal(out.exitCode, 0, out.stdout);
    assert.match(a.bodies[0], /"IPs":null\}$/);
  } finally {
    await a.close();
  }
});
