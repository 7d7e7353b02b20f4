// The self-contained payload (npm run package) runs with nothing from the build machine: inside
// minimal Debian roots (debootstrap minbase: no Node.js, no nftables, no libnftables), Debian 12
// and Debian 11 (glibc 2.31, older than the 2.34 the addon is built against: only the payload's
// own C library can run it), entered with chroot, it answers VERSION and does a real ADD and DEL of a sidecar pod in a network namespace
// created outside the root, against a local API stand-in. The rules it leaves are exactly those
// `node bin/istio-cni-ts.js` leaves for the same request. Needs root, debootstrap (first run
// only), unshare, chroot, ip, nft and openssl; fails loudly without them.
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PACKAGE_ROOT } from '../../support/conformance';
import { sidecarPod } from '../../support/cni-fakes';
import {
  ensureDebianRoot,
  ensurePayload,
  PodApi,
  runAsync,
  runInRoot,
  SIDECAR_PREV_RESULT,
  sidecarConf,
  sidecarEnv,
  standaloneArgv,
  startPodApi,
} from '../../support/payload';
import { inNetns, makeNetns, requireRootAndTools } from '../../support/root';

const ROOT_RUN_DIR = '/run/istio-cni';
/** The Debian releases whose minimal roots the payload runs in, and the glibc each has. */
const SUITES = [
  { suite: 'bookworm', glibc: '2.36' },
  { suite: 'bullseye', glibc: '2.31' },
];
let payload: string;
const roots = new Map<string, string>();
let api: PodApi;
const namespaces: ReturnType<typeof makeNetns>[] = [];

before(() => {
  requireRootAndTools('ip', 'nft', 'unshare', 'chroot', 'mount', 'openssl', 'flock');
  payload = ensurePayload();
  for (const { suite } of SUITES) roots.set(suite, ensureDebianRoot(suite));
});
before(async () => {
  api = await startPodApi();
  api.pods.set('shop/web-1', sidecarPod({ name: 'web-1', namespace: 'shop' }));
});
after(async () => {
  for (const ns of namespaces) {
    ns.remove();
    for (const root of roots.values()) fs.rmSync(path.join(root, ns.path), { force: true });
  }
  await api?.close();
});

const prevResult = SIDECAR_PREV_RESULT;
const conf = sidecarConf;
const env = sidecarEnv;

function inRoot(root: string, cmd: string | string[], e: Record<string, string>, stdin: string, netns: string[] = []) {
  return runInRoot(root, { payload, runDir: api.runDir, netns, cmd, env: e, stdin });
}

/** The reference: the same request through `node bin/istio-cni-ts.js` on the host. */
function onHost(e: Record<string, string>, stdin: string) {
  return runAsync(process.execPath, [path.join(PACKAGE_ROOT, 'bin', 'istio-cni-ts.js')], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...e }, stdin });
}

const ruleset = (ns: string) => inNetns(ns, ['nft', 'list', 'ruleset']);

for (const { suite, glibc } of SUITES) {
  test(`${suite}: the root is minimal: no Node.js, no nft, no libnftables or its libraries; glibc ${glibc}`, () => {
    const root = roots.get(suite)!;
    for (const f of ['usr/bin/node', 'usr/local/bin/node', 'usr/sbin/nft']) assert.ok(!fs.existsSync(path.join(root, f)), f);
    const libs = spawnSync(
      'find',
      [path.join(root, 'usr'), path.join(root, 'lib'), '-name', 'libnftables*', '-o', '-name', 'libnftnl*', '-o', '-name', 'libmnl*'],
      { encoding: 'utf8' },
    );
    assert.equal(libs.stdout.trim(), '', 'nftables libraries in the root');
    assert.ok(fs.existsSync(path.join(root, 'usr/bin/apt')), 'a Debian root');
    const ldd = spawnSync('chroot', [root, 'ldd', '--version'], { encoding: 'utf8' });
    assert.match(ldd.stdout, new RegExp(`^ldd .* ${glibc.replace('.', '\\.')}$`, 'm'), ldd.stdout + ldd.stderr);
  });

  test(`${suite}: VERSION inside the root, through the shim and from the plugin itself`, async () => {
    const root = roots.get(suite)!;
    const want = '{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n';
    for (const cmd of ['/opt/cni/bin/istio-cni', standaloneArgv('/opt/cni/bin')]) {
      const r = await inRoot(root, cmd, { CNI_COMMAND: 'VERSION' }, '{"cniVersion":"0.4.0"}');
      assert.equal(r.code, 0, `${cmd}: ${r.stderr}`);
      assert.equal(r.stdout, want, String(cmd));
    }
    const r = await inRoot(root, '/opt/cni/bin/istio-cni', { CNI_COMMAND: 'VERSION' }, '');
    assert.equal(JSON.parse(r.stdout).cniVersion, '1.1.0', r.stderr);
  });

  test(`${suite}: ADD and DEL of a sidecar pod inside the root, into a netns made outside it: same output and rules as on the host`, async () => {
    const root = roots.get(suite)!;
    const inside = makeNetns(`payload-${suite}`);
    const host = makeNetns(`payload-host-${suite}`);
    namespaces.push(inside, host);

    const add = await inRoot(root, '/opt/cni/bin/istio-cni', env('ADD', inside.path), conf(ROOT_RUN_DIR), [inside.path]);
    assert.equal(add.code, 0, `stdout: ${add.stdout}\nstderr: ${add.stderr}`);
    assert.deepEqual(JSON.parse(add.stdout), prevResult);
    assert.ok(!/error while loading shared libraries|cannot open shared object/.test(add.stderr), add.stderr);
    assert.ok(api.requests.includes('GET /api/v1/namespaces/shop/pods/web-1'), api.requests.join(','));

    const ref = await onHost(env('ADD', host.path), conf(api.runDir));
    assert.equal(ref.code, 0, ref.stdout + ref.stderr);
    assert.equal(add.stdout, ref.stdout, 'byte-identical result to node bin/istio-cni-ts.js');

    const applied = ruleset(inside.name);
    for (const t of ['istio-proxy-nat']) assert.match(applied, new RegExp(`table inet ${t} `), applied);
    assert.match(applied, /redirect to :15001/, applied);
    assert.equal(applied, ruleset(host.name), 'the same rules as the host run');

    const del = await inRoot(root, '/opt/cni/bin/istio-cni', env('DEL', inside.path), conf(ROOT_RUN_DIR), [inside.path]);
    assert.equal(del.code, 0, del.stdout + del.stderr);
    assert.equal(del.stdout, '');
    assert.doesNotMatch(ruleset(inside.name), /istio-proxy/);
  });

  test(`${suite}: bad input inside the root: the error JSON, exit 1`, async () => {
    const root = roots.get(suite)!;
    const r = await inRoot(root, '/opt/cni/bin/istio-cni', { CNI_COMMAND: 'ADD' }, conf(ROOT_RUN_DIR));
    assert.equal(r.code, 1, r.stderr);
    assert.equal(JSON.parse(r.stdout).code, 4, r.stdout);
  });
}
