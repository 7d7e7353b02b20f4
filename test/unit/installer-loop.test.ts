// Atomic files, payload copy, kubeconfig, the install loop (watch, re-install, throttle) and cleanup.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { copyBinaries } from '../../src/installer/binaries';
import { insertCNIConfig } from '../../src/installer/cniconfig';
import { InstallConfig, installConfig, pluginConfigText } from '../../src/installer/config';
import { atomicCopy, atomicWrite } from '../../src/installer/fsutil';
import { InstallThrottle, Installer, installOnce } from '../../src/installer/installer';
import { createKubeConfig, writeKubeConfigFile } from '../../src/installer/kubeconfig';
import { MemoryLogger } from '../../src/log/logger';
import { AgentDirs, agentDirs } from '../support/agent-proc';
import { PACKAGE_ROOT } from '../support/conformance';
import { tempDir } from '../support/tmp';
import { until } from '../support/until';

function tmp(): string {
  return tempDir(path.join(os.tmpdir(), 'icts-loop-'));
}

test('atomicWrite: exact mode whatever the umask, no temp file left, target untouched on failure', async () => {
  const d = tmp();
  const f = path.join(d, 'x.conf');
  const old = process.umask(0o077);
  try {
    await atomicWrite(f, 'one', 0o644);
  } finally {
    process.umask(old);
  }
  assert.equal(fs.statSync(f).mode & 0o777, 0o644);
  await atomicWrite(f, 'two', 0o600);
  assert.equal(fs.readFileSync(f, 'utf8'), 'two');
  assert.deepEqual(fs.readdirSync(d), ['x.conf']);
  await assert.rejects(atomicWrite(path.join(d, 'missing', 'y'), 'z', 0o600));
  fs.mkdirSync(path.join(d, 'dir.conf'));
  await assert.rejects(atomicWrite(path.join(d, 'dir.conf'), 'z', 0o600), 'cannot rename over a directory');
  assert.deepEqual(fs.readdirSync(d).sort(), ['dir.conf', 'x.conf']);
});

test('atomicCopy keeps the source mode', async () => {
  const d = tmp();
  fs.writeFileSync(path.join(d, 'src'), 'bin', { mode: 0o750 });
  fs.chmodSync(path.join(d, 'src'), 0o750);
  fs.mkdirSync(path.join(d, 'out'));
  await atomicCopy(path.join(d, 'src'), path.join(d, 'out'), 'dst');
  assert.equal(fs.statSync(path.join(d, 'out', 'dst')).mode & 0o777, 0o750);
});

test('copyBinaries: plugin renamed to its type, other files kept, dirs skipped, stale temps removed, unchanged files left alone', async () => {
  const src = tmp();
  const dst = tmp();
  fs.writeFileSync(path.join(src, 'istio-cni'), 'plugin', { mode: 0o755 });
  fs.writeFileSync(path.join(src, 'helper.so'), 'lib', { mode: 0o644 });
  fs.mkdirSync(path.join(src, 'subdir'));
  fs.writeFileSync(path.join(dst, 'my-cni.tmp.abc123'), 'junk');
  fs.writeFileSync(path.join(dst, 'other-plugin'), 'theirs');
  const names = await copyBinaries(src, [dst], 'my-cni');
  assert.deepEqual([...names].sort(), ['helper.so', 'my-cni']);
  assert.deepEqual(fs.readdirSync(dst).sort(), ['helper.so', 'my-cni', 'other-plugin']);
  assert.equal(fs.readFileSync(path.join(dst, 'my-cni'), 'utf8'), 'plugin');
  const ino = fs.statSync(path.join(dst, 'my-cni')).ino;
  await copyBinaries(src, [dst], 'my-cni');
  assert.equal(fs.statSync(path.join(dst, 'my-cni')).ino, ino, 'same bytes: not rewritten');
  fs.writeFileSync(path.join(src, 'istio-cni'), 'plugin v2', { mode: 0o755 });
  await copyBinaries(src, [dst], 'my-cni');
  assert.equal(fs.readFileSync(path.join(dst, 'my-cni'), 'utf8'), 'plugin v2');
});

test('copyBinaries into an unusable target fails loudly and leaves the payload alone', async () => {
  const src = tmp();
  const parent = tmp();
  fs.writeFileSync(path.join(src, 'istio-cni'), 'plugin');
  const notADir = path.join(parent, 'bin');
  fs.writeFileSync(notADir, 'a file where the bin dir should be');
  await assert.rejects(copyBinaries(src, [notADir], 'istio-cni'), /ENOTDIR/);
  assert.equal(fs.readFileSync(notADir, 'utf8'), 'a file where the bin dir should be');
  assert.deepEqual(fs.readdirSync(src), ['istio-cni']);
});

const CA = Buffer.from('-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');

function saDir(token = 'service_account_token_string'): string {
  const d = tmp();
  fs.writeFileSync(path.join(d, 'token'), token);
  fs.writeFileSync(path.join(d, 'ca.crt'), CA);
  return d;
}

test('kubeconfig: TLS, skip-TLS, IPv6 host, and the two required variables', () => {
  const sa = saDir();
  const base = installConfig({ k8sServiceAccountPath: sa, k8sServiceHost: '10.96.0.1', k8sServicePort: '443' });
  const tls = createKubeConfig(base).full;
  // The golden: what install-cni writes for this service account (CA and token above).
  assert.equal(tls, fs.readFileSync(path.join(PACKAGE_ROOT, 'test', 'fixtures', 'kubeconfig-tls.yaml'), 'utf8'));
  const skip = createKubeConfig({ ...base, skipTLSVerify: true });
  assert.match(skip.full, /- cluster:\n {4}insecure-skip-tls-verify: true\n {4}server: https:\/\/10.96.0.1:443\n/);
  assert.doesNotMatch(skip.full, /certificate-authority/);
  assert.match(createKubeConfig({ ...base, k8sServiceHost: 'fd00::1', k8sServiceProtocol: 'http' }).full, /server: http:\/\/\[fd00::1\]:443\n/);
  assert.match(createKubeConfig(base).redacted, /token: REDACTED/);
  assert.doesNotMatch(createKubeConfig(base).redacted, /service_account_token_string/);
  assert.throws(() => createKubeConfig({ ...base, k8sServiceHost: '' }), /KUBERNETES_SERVICE_HOST/);
  assert.throws(() => createKubeConfig({ ...base, k8sServicePort: '' }), /KUBERNETES_SERVICE_PORT/);
  assert.throws(() => createKubeConfig({ ...base, k8sServiceAccountPath: tmp() }), /ca\.crt/);
});

test('kubeconfig file: KUBECONFIG_MODE, unchanged token = no rewrite, rotated token = rewrite', async () => {
  const sa = saDir('token-foo');
  const run = path.join(tmp(), 'run');
  const cfg = installConfig({ k8sServiceAccountPath: sa, k8sServiceHost: 'h', k8sServicePort: '1', cniAgentRunDir: run, kubeconfigMode: 0o640 });
  const f = await writeKubeConfigFile(cfg);
  assert.equal(f, path.join(run, 'istio-cni-kubeconfig'));
  assert.equal(fs.statSync(f).mode & 0o777, 0o640);
  const ino = fs.statSync(f).ino;
  await writeKubeConfigFile(cfg);
  assert.equal(fs.statSync(f).ino, ino);
  fs.writeFileSync(path.join(sa, 'token'), 'token-bar\n');
  await writeKubeConfigFile(cfg);
  assert.match(fs.readFileSync(f, 'utf8'), /token: token-bar\n/);
});

const LIST = JSON.stringify({ cniVersion: '0.4.0', name: 'k8s', plugins: [{ type: 'ptp' }, { type: 'portmap' }] });

/** The agent's directories (no primary config yet) and the install config over them. */
function env(over: Partial<InstallConfig> = {}): AgentDirs & { cfg: InstallConfig } {
  const d = agentDirs({ base: tmp(), api: { caPem: CA.toString(), token: 'token-foo' }, primary: false });
  const cfg = installConfig({
    mountedCNINetDir: d.net,
    cniBinTargetDirs: [d.bin],
    cniBinSourceDir: d.src,
    k8sServiceAccountPath: d.sa,
    cniAgentRunDir: d.run,
    k8sServiceHost: '127.0.0.1',
    k8sServicePort: '6443',
    ...over,
  });
  return { ...d, cfg };
}

const hasIstio = (f: string) => {
  try {
    return (JSON.parse(fs.readFileSync(f, 'utf8')).plugins as { type: string }[]).some((p) => p.type === 'istio-cni');
  } catch {
    return false;
  }
};

test('installOnce: binary, kubeconfig and chained config in one pass', async () => {
  const e = env();
  fs.writeFileSync(path.join(e.net, '10-k8s.conflist'), LIST);
  const r = await installOnce(e.cfg);
  assert.deepEqual(r, {
    cniConfigFile: path.join(e.net, '10-k8s.conflist'),
    kubeconfigFile: path.join(e.run, 'istio-cni-kubeconfig'),
    binaries: ['istio-cni'],
  });
  assert.ok(hasIstio(r.cniConfigFile));
  assert.ok(fs.existsSync(path.join(e.bin, 'istio-cni')));
});

test('install loop: ready once installed; re-installs a removed binary, a stripped config and a rotated token within 2 s', async () => {
  const e = env();
  fs.writeFileSync(path.join(e.net, '10-k8s.conflist'), LIST);
  let ready = false;
  const results: string[] = [];
  const log = new MemoryLogger();
  const installer = new Installer(e.cfg, { log, observer: { ready: (r) => (ready = r), installResult: (r) => results.push(r) } });
  const ac = new AbortController();
  const done = installer.run(ac.signal);
  try {
    await until('ready', () => ready, 2000);
    const conf = path.join(e.net, '10-k8s.conflist');
    assert.ok(hasIstio(conf));

    fs.rmSync(path.join(e.bin, 'istio-cni'));
    await until('binary back', () => fs.existsSync(path.join(e.bin, 'istio-cni')), 2000);

    await until('ready again', () => ready, 3000);
    fs.writeFileSync(conf, LIST); // the primary CNI rewrites its config without us
    await until('config re-chained', () => hasIstio(conf), 2000);

    const kc = path.join(e.run, 'istio-cni-kubeconfig');
    await until('ready again', () => ready, 3000);
    fs.writeFileSync(path.join(e.sa, 'token'), 'token-bar');
    await until('kubeconfig rewritten', () => fs.readFileSync(kc, 'utf8').includes('token: token-bar'), 2000);
    assert.ok(results.includes('SUCCESS'));
  } finally {
    ac.abort();
    await done;
  }
  assert.equal(ready, false, 'not ready once stopped');
});

test('install loop: a bad net dir does not stop the loop; it installs once a valid config appears', async () => {
  const e = env();
  fs.writeFileSync(path.join(e.net, '05-garbage.conflist'), '{{{');
  fs.writeFileSync(path.join(e.net, '06-empty.conflist'), JSON.stringify({ name: 'x', plugins: [] }));
  let ready = false;
  const installer = new Installer(e.cfg, { observer: { ready: (r) => (ready = r) }, pollMs: 100 });
  const ac = new AbortController();
  const done = installer.run(ac.signal);
  try {
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(ready, false);
    assert.equal(fs.readFileSync(path.join(e.net, '05-garbage.conflist'), 'utf8'), '{{{', 'untouched');
    fs.writeFileSync(path.join(e.net, '10-k8s.conflist'), LIST);
    await until('ready', () => ready, 2000);
    assert.ok(hasIstio(path.join(e.net, '10-k8s.conflist')));
  } finally {
    ac.abort();
    await done;
  }
});

test('install loop: a missing token fails the pass (counted), then recovers when it appears', async () => {
  const e = env();
  fs.writeFileSync(path.join(e.net, '10-k8s.conflist'), LIST);
  fs.rmSync(path.join(e.sa, 'token'));
  let ready = false;
  const results: string[] = [];
  const log = new MemoryLogger();
  const installer = new Installer(e.cfg, {
    log,
    observer: { ready: (r) => (ready = r), installResult: (r) => results.push(r) },
    retryMinMs: 50,
    retryMaxMs: 200,
  });
  const ac = new AbortController();
  const done = installer.run(ac.signal);
  try {
    await until('failure counted', () => results.includes('CREATE_KUBECONFIG_FAILURE'), 2000);
    assert.ok(log.has('error', /installation failed, will retry: write kubeconfig/));
    assert.equal(ready, false);
    fs.writeFileSync(path.join(e.sa, 'token'), 'late-token');
    await until('ready', () => ready, 2000);
  } finally {
    ac.abort();
    await done;
  }
});

test('throttle: quiet passes are free; a storm sleeps up to 1 s per pass and warns after 5', async () => {
  let now = 0;
  const log = new MemoryLogger();
  const t = new InstallThrottle(
    log,
    () => '/etc/cni/net.d/05-cilium.conflist',
    () => now,
  );
  assert.equal(t.reserve(), 0);
  now += 5000;
  assert.equal(t.reserve(), 0);
  assert.equal(Math.round(t.reserve()), 5000);
  now += 1000;
  assert.equal(Math.round(t.reserve()), 9000, 'debt accumulates while reverted repeatedly');
  // The sleep itself: 7 throttled passes in a row, each capped at 1 s (fake clock, real 1 ms sleeps).
  const t2 = new InstallThrottle(
    log,
    () => '/x/cilium.conflist',
    () => now,
  );
  await t2.throttle();
  const orig = global.setTimeout;
  const fast = ((fn: () => void) => orig(fn, 1)) as unknown as typeof setTimeout;
  global.setTimeout = fast;
  try {
    for (let i = 0; i < 6; i++) await t2.throttle();
  } finally {
    global.setTimeout = orig;
  }
  assert.equal(t2.hits, 6);
  assert.ok(log.has('warn', /conflicting component.*cni\.exclusive=false/));
});

test('cleanup: chained removes only our entry (keeping the mode); standalone and owned delete our file', async () => {
  const e = env();
  const conf = path.join(e.net, '10-k8s.conflist');
  fs.writeFileSync(conf, insertCNIConfig(pluginConfigText(e.cfg), LIST), { mode: 0o644 });
  fs.chmodSync(conf, 0o644);
  fs.writeFileSync(path.join(e.bin, 'istio-cni'), 'x');
  fs.writeFileSync(path.join(e.bin, 'other'), 'y');
  const i = new Installer(e.cfg);
  i.cniConfigFilepath = conf;
  await i.cleanup();
  assert.deepEqual(JSON.parse(fs.readFileSync(conf, 'utf8')).plugins, [{ type: 'ptp' }, { type: 'portmap' }]);
  assert.equal(fs.statSync(conf).mode & 0o777, 0o644);
  assert.deepEqual(fs.readdirSync(e.bin), ['other']);

  const s = env({ chainedCNIPlugin: false });
  const own = path.join(s.net, 'YYY-istio-cni.conf');
  fs.writeFileSync(own, pluginConfigText(s.cfg));
  const si = new Installer(s.cfg);
  si.cniConfigFilepath = own;
  await si.cleanup();
  assert.equal(fs.existsSync(own), false);
});

test('cleanup never deletes a primary config when ISTIO_OWNED_CNI_CONFIG is set without ambient (upstream would)', async () => {
  const e = env({ istioOwnedCNIConfig: true, istioOwnedCNIConfigFilename: '02-istio-cni.conflist', ambientEnabled: false });
  fs.writeFileSync(path.join(e.net, '10-k8s.conflist'), LIST);
  const r = await installOnce(e.cfg);
  assert.equal(r.cniConfigFile, path.join(e.net, '10-k8s.conflist'), 'owned mode is not in force without ambient');
  const i = new Installer(e.cfg);
  i.cniConfigFilepath = r.cniConfigFile;
  await i.cleanup();
  assert.equal(fs.readFileSync(r.cniConfigFile, 'utf8').includes('istio-cni'), false);
  assert.ok(fs.existsSync(r.cniConfigFile), 'primary kept');
});

test('owned mode: writes 02-istio-cni.conflist, leaves the primary alone, cleanup deletes only ours', async () => {
  const e = env({ istioOwnedCNIConfig: true, istioOwnedCNIConfigFilename: '02-istio-cni.conflist', ambientEnabled: true });
  fs.writeFileSync(path.join(e.net, '10-k8s.conflist'), LIST);
  const r = await installOnce(e.cfg);
  assert.equal(r.cniConfigFile, path.join(e.net, '02-istio-cni.conflist'));
  assert.equal(fs.readFileSync(path.join(e.net, '10-k8s.conflist'), 'utf8'), LIST);
  const i = new Installer(e.cfg);
  i.cniConfigFilepath = r.cniConfigFile;
  await i.cleanup();
  assert.deepEqual(fs.readdirSync(e.net), ['10-k8s.conflist']);
});
