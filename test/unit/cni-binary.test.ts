// The built executable run as a container runtime runs it: env + stdin in, then only the result
// or error JSON on stdout and the exit code; logs on stderr. Uses a local HTTPS API stand-in
// (generated CA, bearer token checked) and a real kubeconfig file; no root needed (nothing here
// reaches the point of applying rules).
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as https from 'node:https';
import { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { PACKAGE_ROOT } from '../support/conformance';
import { istioKubeconfig, makePki } from '../support/tls';
import { pluginConf, sidecarPod } from '../support/cni-fakes';
import { tempDir } from '../support/tmp';
import { CniErrorResult } from '../../src/cni/errors';

/** A document the plugin printed: a result, a version answer, or an error (whose fields are typed). */
type CniDoc = Partial<CniErrorResult> & Record<string, unknown>;

const BIN = path.join(PACKAGE_ROOT, 'bin', 'istio-cni-ts.js');
const TOKEN = 'sa-token-do-not-log-7f3a';

interface Run {
  stdout: string;
  stderr: string;
  code: number | null;
}

function runBin(env: Record<string, string>, stdin: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ stdout, stderr, code }));
    child.stdin.end(stdin);
  });
}

/** stdout holds exactly one JSON document (and its newline), nothing else. */
function onlyJson(r: Run): CniDoc {
  assert.ok(r.stdout.endsWith('\n') && r.stdout.indexOf('\n') === r.stdout.length - 1, `one line on stdout: ${JSON.stringify(r.stdout)}`);
  return JSON.parse(r.stdout) as CniDoc;
}

let runDir: string;
let server: https.Server;
const pods = new Map<string, object>();

before(async () => {
  const pki = makePki();
  server = https.createServer({ cert: pki.cert, key: pki.key }, (req, res) => {
    const pod = pods.get(req.url ?? '');
    if (req.headers.authorization !== `Bearer ${TOKEN}`) res.writeHead(401).end('{"message":"Unauthorized"}');
    else if (pod) res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(pod));
    else res.writeHead(404).end('{"message":"not found"}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const base = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  runDir = tempDir(path.join(os.tmpdir(), 'icts-rundir-'));
  fs.writeFileSync(path.join(runDir, 'istio-cni-kubeconfig'), istioKubeconfig(base, { caPem: pki.ca, token: TOKEN }), { mode: 0o600 });
  const plain = { metadata: { name: 'plain', namespace: 'shop' }, spec: { containers: [{ name: 'app' }] } };
  pods.set('/api/v1/namespaces/shop/pods/plain', plain);
  pods.set(
    '/api/v1/namespaces/shop/pods/bad',
    sidecarPod({ name: 'bad', annotations: { 'traffic.sidecar.istio.io/includeOutboundIPRanges': '10.0.0.0/8; flush ruleset' } }),
  );
});
after(() => {
  server?.close();
  if (runDir) fs.rmSync(runDir, { recursive: true, force: true });
});

const prevResult = { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: '/var/run/netns/x' }], ips: [{ address: '10.0.0.2/24', interface: 0 }] };
const conf = (over: Record<string, unknown> = {}) => pluginConf(runDir, prevResult, over);
const env = (command: string, over: Record<string, string> = {}) => ({
  CNI_COMMAND: command,
  CNI_CONTAINERID: 'c0ffee',
  CNI_NETNS: '/var/run/netns/icts-no-such-netns',
  CNI_IFNAME: 'eth0',
  CNI_PATH: '/opt/cni/bin',
  CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=plain',
  ...over,
});

test('VERSION: the version JSON only, exit 0', async () => {
  let r = await runBin({ CNI_COMMAND: 'VERSION' }, '');
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(onlyJson(r), { cniVersion: '1.1.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
  r = await runBin({ CNI_COMMAND: 'VERSION' }, '{"cniVersion":"0.4.0"}');
  assert.equal(onlyJson(r).cniVersion, '0.4.0');
});

test('bad input: the error JSON only on stdout, exit 1, the right code', async () => {
  const cases: [Record<string, string>, string, number][] = [
    [{ CNI_COMMAND: 'ADD' }, conf(), 4],
    [env('ADD', { CNI_CONTAINERID: '' }), conf(), 4],
    [env('ADD', { CNI_IFNAME: 'eth 0' }), conf(), 4],
    [env('BOGUS'), conf(), 4],
    [env('ADD'), '{not json', 6],
    [env('ADD'), '', 6],
    [env('ADD'), conf({ cniVersion: '9.9.9' }), 1],
    [env('CHECK'), conf({ cniVersion: '0.3.1' }), 1],
    [env('ADD'), conf({ name: '' }), 7],
    [env('ADD'), conf({ ambient_enabled: 'yes' }), 7],
    [env('ADD', { CNI_ARGS: 'K8S_POD_NAME=a;X=1' }), conf(), 4],
  ];
  for (const [e, stdin, code] of cases) {
    const r = await runBin(e, stdin);
    assert.equal(r.code, 1, `${JSON.stringify(e)}: ${r.stdout}`);
    const doc = onlyJson(r);
    assert.equal(doc.code, code, r.stdout);
    assert.deepEqual(Object.keys(doc).sort(), ['cniVersion', 'code', 'details', 'msg']);
  }
});

test('ADD for a pod that is not captured: prevResult through, logs on stderr as JSON lines', async () => {
  const r = await runBin(env('ADD'), conf());
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.deepEqual(onlyJson(r), prevResult);
  const lines = r.stderr
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.ok(
    lines.some((l) => /no sidecar capture/.test(l.msg) && l.pod === 'shop/plain'),
    r.stderr,
  );
  assert.ok(!r.stderr.includes(TOKEN));
});

test('ADD, own agent pod and excluded namespace pass through; not Kubernetes too', async () => {
  for (const args of ['K8S_POD_NAMESPACE=istio-system;K8S_POD_NAME=istio-cni-node-q8x2z', 'K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns', '']) {
    const r = await runBin(env('ADD', { CNI_ARGS: args }), conf({ cni_agent_run_dir: '/nonexistent-run-dir' }));
    assert.equal(r.code, 0, r.stdout);
    assert.deepEqual(onlyJson(r), prevResult);
  }
});

test('ADD, invalid annotation: code 103 naming annotation and value', async () => {
  const r = await runBin(env('ADD', { CNI_ARGS: 'K8S_POD_NAMESPACE=shop;K8S_POD_NAME=bad' }), conf());
  assert.equal(r.code, 1);
  const doc = onlyJson(r);
  assert.equal(doc.code, 103);
  const msg = String(doc.msg);
  assert.ok(msg.includes('traffic.sidecar.istio.io/includeOutboundIPRanges') && msg.includes('10.0.0.0/8; flush ruleset'), msg);
});

test('ADD, no kubeconfig: code 101; unknown pod: code 102 after the configured retries', async () => {
  let r = await runBin(env('ADD'), conf({ cni_agent_run_dir: '/nonexistent-run-dir' }));
  assert.equal(onlyJson(r).code, 101);
  r = await runBin(env('ADD', { CNI_ARGS: 'K8S_POD_NAMESPACE=shop;K8S_POD_NAME=ghost' }), conf({ pod_lookup_attempts: 2, pod_lookup_interval_ms: 10 }));
  const doc = onlyJson(r);
  assert.equal(doc.code, 102);
  assert.match(String(doc.details), /after 2 attempts/);
  assert.ok(!r.stderr.includes(TOKEN) && !r.stdout.includes(TOKEN));
});

test("ADD and DEL refuse the plugin's own netns (code 8); DEL without a netns succeeds silently", async () => {
  let r = await runBin(env('ADD', { CNI_NETNS: '/proc/self/ns/net' }), conf());
  assert.equal(onlyJson(r).code, 8);
  r = await runBin(env('DEL', { CNI_NETNS: '/proc/self/ns/net' }), conf());
  assert.equal(onlyJson(r).code, 8);
  for (const netns of ['', '/var/run/netns/icts-no-such-netns']) {
    r = await runBin(env('DEL', { CNI_NETNS: netns }), conf());
    assert.equal(r.code, 0, r.stdout);
    assert.equal(r.stdout, '');
  }
});

test('STATUS: ready with a kubeconfig, code 50 without', async () => {
  let r = await runBin({ CNI_COMMAND: 'STATUS' }, conf({ cniVersion: '1.1.0' }));
  assert.deepEqual([r.code, r.stdout], [0, '']);
  r = await runBin({ CNI_COMMAND: 'STATUS' }, conf({ cniVersion: '1.1.0', cni_agent_run_dir: '/nonexistent-run-dir' }));
  assert.equal(onlyJson(r).code, 50);
});
