// The payload brings its own C library: in an EMPTY root (a chroot holding only the payload at
// /opt/cni/bin, /proc, /dev/null, the run dir and the netns file; no /lib, no /usr, no shell)
// the installed shim answers VERSION and does a real ADD, CHECK and DEL of a sidecar pod. No
// agent listens, so the standalone plugin runs, started by the shim through the payload's own
// loader. The rules equal those `node bin/istio-cni-ts.js` leaves on the host for the same
// request. A broken payload (a library missing, a file truncated or foreign) is the shim's CNI
// error naming the file. Needs root, unshare, chroot, mount, ip, nft, openssl.
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PACKAGE_ROOT } from '../../support/conformance';
import { sidecarPod } from '../../support/cni-fakes';
import { ensurePayload, PodApi, runAsync, runInRoot, SHIM_NAME, SIDECAR_PREV_RESULT, sidecarConf, sidecarEnv, startPodApi } from '../../support/payload';
import { inNetns, makeNetns, requireRootAndTools } from '../../support/root';
import { tempDir } from '../../support/tmp';

const ROOT_RUN_DIR = '/run/istio-cni';
let payload: string;
let root: string;
let api: PodApi;
const namespaces: ReturnType<typeof makeNetns>[] = [];

before(async () => {
  requireRootAndTools('ip', 'nft', 'unshare', 'chroot', 'mount', 'openssl', 'flock');
  payload = ensurePayload();
  root = tempDir('/var/tmp/icts-empty-root-');
  api = await startPodApi();
  api.pods.set('shop/web-1', sidecarPod({ name: 'web-1', namespace: 'shop' }));
});
after(async () => {
  for (const ns of namespaces) ns.remove();
  await api?.close();
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

const prevResult = SIDECAR_PREV_RESULT;
const conf = sidecarConf;
const env = sidecarEnv;
const SHIM_IN_ROOT = `/opt/cni/bin/${SHIM_NAME}`;

function inRoot(e: Record<string, string>, stdin: string, netns: string[] = []) {
  return runInRoot(root, { payload, runDir: api.runDir, netns, cmd: SHIM_IN_ROOT, env: e, stdin });
}

/** Every file and directory under the root, as paths relative to it (mount points included). */
function listRoot(): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(path.join(root, d), { withFileTypes: true })) {
      const rel = path.join(d, e.name);
      out.push(rel);
      if (e.isDirectory()) walk(rel);
    }
  };
  walk('');
  return out.sort();
}

const ruleset = (ns: string) => inNetns(ns, ['nft', 'list', 'ruleset']);

test('VERSION through the shim in an empty root: no /lib, /usr or shell there', async () => {
  const r = await inRoot({ CNI_COMMAND: 'VERSION' }, '{"cniVersion":"0.4.0"}');
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(r.stdout, '{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n');
  // What the root held while the shim ran: mount points only (the payload came in bound).
  assert.deepEqual(listRoot(), ['dev', 'dev/null', 'opt', 'opt/cni', 'opt/cni/bin', 'proc', 'run', 'run/istio-cni', 'run/netns']);
});

test('ADD, CHECK and DEL of a sidecar pod in the empty root, agent down: the rules the host run leaves', async () => {
  const inside = makeNetns('empty-root');
  const host = makeNetns('empty-host');
  namespaces.push(inside, host);

  const add = await inRoot(env('ADD', inside.path), conf(ROOT_RUN_DIR), [inside.path]);
  assert.equal(add.code, 0, `stdout: ${add.stdout}\nstderr: ${add.stderr}`);
  assert.deepEqual(JSON.parse(add.stdout), prevResult);
  assert.ok(api.requests.includes('GET /api/v1/namespaces/shop/pods/web-1'), api.requests.join(','));

  const ref = await runAsync(process.execPath, [path.join(PACKAGE_ROOT, 'bin', 'istio-cni-ts.js')], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env('ADD', host.path) },
    stdin: conf(api.runDir),
  });
  assert.equal(ref.code, 0, ref.stdout + ref.stderr);
  assert.equal(add.stdout, ref.stdout, 'byte-identical result to node bin/istio-cni-ts.js');
  const applied = ruleset(inside.name);
  assert.match(applied, /redirect to :15001/, applied);
  assert.equal(applied, ruleset(host.name), 'the same rules as the host run');

  const check = await inRoot(env('CHECK', inside.path), conf(ROOT_RUN_DIR), [inside.path]);
  assert.equal(check.code, 0, check.stdout + check.stderr);
  assert.equal(check.stdout, '');

  const del = await inRoot(env('DEL', inside.path), conf(ROOT_RUN_DIR), [inside.path]);
  assert.equal(del.code, 0, del.stdout + del.stderr);
  assert.equal(del.stdout, '');
  assert.doesNotMatch(ruleset(inside.name), /istio-proxy/);
});

/** A copy of the payload (hard links, the changed file replaced) with `damage` applied. */
function damaged(damage: (dir: string) => void): string {
  const dir = tempDir('/var/tmp/icts-damaged-payload-');
  fs.rmSync(dir, { recursive: true });
  const r = spawnSync('cp', ['-al', payload, dir], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  damage(path.join(dir, 'istio-cni-ts'));
  return dir;
}

for (const c of [
  {
    what: 'a library missing',
    file: 'lib/libnftnl.so.11',
    damage: (f: string) => fs.rmSync(f),
    want: /libnftnl\.so\.11 \(listed in .*MANIFEST\): No such file or directory/,
  },
  {
    what: 'the loader truncated',
    file: 'lib/ld-linux-x86-64.so.2',
    damage: (f: string) => {
      fs.rmSync(f);
      fs.writeFileSync(f, fs.readFileSync(path.join(payload, 'istio-cni-ts/lib/ld-linux-x86-64.so.2')).subarray(0, 4096), { mode: 0o755 });
    },
    want: /ld-linux-x86-64\.so\.2 is 4096 bytes, .*MANIFEST lists \d+ \(truncated or replaced\)/,
  },
  {
    what: 'a foreign file of the same size',
    file: 'lib/libc.so.6',
    damage: (f: string) => {
      const n = fs.statSync(f).size;
      fs.rmSync(f);
      fs.writeFileSync(f, Buffer.alloc(n, 0x23));
    },
    want: /libc\.so\.6 is not an ELF file for this machine/,
  },
  { what: 'no manifest', file: 'MANIFEST', damage: (f: string) => fs.rmSync(f), want: /MANIFEST: No such file or directory/ },
]) {
  test(`a broken payload (${c.what}) in the empty root: the shim's CNI error naming the file, code 100, no loader message`, async () => {
    const dir = damaged((d) => c.damage(path.join(d, c.file)));
    try {
      const r = await runInRoot(root, {
        payload: dir,
        runDir: api.runDir,
        netns: [],
        cmd: SHIM_IN_ROOT,
        env: env('ADD', '/run/netns/x'),
        stdin: conf(ROOT_RUN_DIR),
      });
      assert.equal(r.code, 1, r.stdout + r.stderr);
      const doc = JSON.parse(r.stdout) as { cniVersion: string; code: number; msg: string; details: string };
      assert.equal(doc.code, 100, r.stdout);
      assert.equal(doc.cniVersion, '1.0.0');
      assert.match(doc.msg, /standalone plugin's payload is broken/);
      assert.match(doc.details, c.want);
      assert.ok(doc.details.includes(`/opt/cni/bin/istio-cni-ts/${c.file}`), doc.details);
      assert.doesNotMatch(r.stdout + r.stderr, /error while loading shared libraries|cannot open shared object/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}
