// The DaemonSet image `npm run image` builds (scripts/build-image.js) imports into a private
// containerd and its containers run: the CLI, install-cni, the addon loading under the image's own
// C library, and the host payload it carries. The chart-level node test is
// containerd-*.test.ts's business; this one proves the image itself. Needs root, containerd,
// ctr, runc, nsenter, and what `npm run package` needs; fails loudly without them.
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PACKAGE_ROOT } from '../../support/conformance';
import { requireRootAndTools } from '../../support/root';
import { tempDir } from '../../support/tmp';
import { PrivateContainerd } from './containerd';

const TAG = 'localhost/istio-cni-ts:e2e';
let dir: string;
let archive: string;
let ctd: PrivateContainerd | undefined;

before(async () => {
  requireRootAndTools('containerd', 'ctr', 'runc', 'nsenter', 'tar', 'gzip', 'strip', 'patchelf');
  dir = tempDir('/var/tmp/icts-image-e2e-');
  archive = path.join(dir, 'image.oci.tar');
  const b = spawnSync(process.execPath, [path.join(PACKAGE_ROOT, 'scripts', 'build-image.js'), '--out', archive, '--tag', TAG], {
    encoding: 'utf8',
    timeout: 10 * 60_000,
  });
  assert.equal(b.status, 0, `scripts/build-image.js failed: ${b.stderr}${b.stdout}`);
  const confDir = path.join(dir, 'net.d');
  fs.mkdirSync(confDir);
  // CRI wants a network config to call itself ready; no pod is started here.
  fs.writeFileSync(path.join(confDir, '10-lo.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'lo', plugins: [{ type: 'loopback' }] }));
  ctd = new PrivateContainerd({
    dir: path.join(dir, 'ctd'),
    cniBinDir: '/usr/lib/cni',
    cniConfDir: confDir,
    sandboxImage: TAG,
    pathEnv: '/usr/sbin:/usr/bin:/sbin:/bin',
    marker: dir,
  });
  await ctd.start();
});
after(async () => {
  const left = (await ctd?.stop()) ?? [];
  assert.deepEqual(left, [], 'nothing left behind');
});

/** `ctr` inside containerd's mount namespace (its /run holds the shim sockets and fifos). */
function ctr(args: string[], timeout = 120_000) {
  return spawnSync('nsenter', ['-t', String(ctd!.pid), '-m', '--', 'ctr', '--address', ctd!.sock, '--namespace', 'k8s.io', ...args], {
    encoding: 'utf8',
    timeout,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

let seq = 0;
function runInImage(cmd: string[], env: Record<string, string> = {}) {
  const envArgs = Object.entries(env).flatMap(([k, v]) => ['--env', `${k}=${v}`]);
  return ctr(['run', '--rm', '--snapshotter', 'overlayfs', ...envArgs, TAG, `icts-image-${process.pid}-${seq++}`, ...cmd]);
}

test('the archive is an OCI image layout; it imports with its name', () => {
  const list = spawnSync('tar', ['-tf', archive], { encoding: 'utf8' }).stdout.split('\n');
  for (const f of ['oci-layout', 'index.json']) assert.ok(list.includes(f), f);
  const imp = ctr(['images', 'import', '--all-platforms', '--snapshotter', 'overlayfs', archive], 300_000);
  assert.equal(imp.status, 0, imp.stderr);
  const ls = ctr(['images', 'ls', '-q']);
  assert.ok(ls.stdout.split('\n').includes(TAG), ls.stdout);
});

test("a container runs the CLI and install-cni (on PATH) with the image's Node", () => {
  const help = runInImage(['istio-cni-ts', '--help']);
  assert.equal(help.status, 0, help.stderr + help.stdout);
  assert.match(help.stdout, /istio-cni-ts agent/);
  const inst = runInImage(['install-cni', '--help']);
  assert.equal(inst.status, 0, inst.stderr + inst.stdout);
  assert.match(inst.stdout, /agent|install-cni/);
  const v = runInImage(['node', '-p', 'process.version']);
  assert.equal(v.status, 0, v.stderr);
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- the build scripts are plain CommonJS outside src/
  const pinned = (require(path.join(PACKAGE_ROOT, 'install', 'node-dist.js')) as { NODE_DIST: { version: string } }).NODE_DIST.version;
  assert.equal(v.stdout.trim(), `v${pinned}`);
});

test("the addon loads in the image (its libraries are the image's own)", () => {
  const r = runInImage(['node', '-e', "const a = require('/opt/istio-cni-ts/build/Release/nftables_napi.node'); console.log(typeof a)"]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'object');
});

test('the host payload is in the image: its shim answers VERSION through the standalone plugin', () => {
  const r = runInImage(['/opt/cni/bin/istio-cni'], { CNI_COMMAND: 'VERSION', ISTIO_CNI_SHIM_STANDALONE: '1' });
  assert.equal(r.status, 0, r.stderr + r.stdout);
  assert.equal(r.stdout, '{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n');
});
