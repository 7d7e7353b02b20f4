// Candidate selection, target resolution and the validity check of the chained config.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkValidCNIConfig, createCNIConfigFile, getCNIConfigFilepath, getConfigFilenames, insertCNIConfig } from '../../src/installer/cniconfig';
import { InstallConfig, installConfig, pluginConfigText } from '../../src/installer/config';
import { MemoryLogger } from '../../src/log/logger';
import { tempDir } from '../support/tmp';

const BRIDGE = JSON.stringify({ cniVersion: '0.4.0', name: 'dbnet', type: 'bridge', bridge: 'cni0' });
const LIST = JSON.stringify({ cniVersion: '0.4.0', name: 'dbnet', plugins: [{ type: 'bridge' }, { type: 'tuning' }] });
const ISTIO = pluginConfigText(installConfig({ pluginLogLevel: 'debug' }));
const LIST_WITH_ISTIO = insertCNIConfig(ISTIO, LIST);
const STANDALONE = ISTIO;

function tmp(): string {
  return tempDir(path.join(os.tmpdir(), 'icts-cniconf-'));
}
function put(dir: string, files: Record<string, string>): void {
  for (const [n, c] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, n)), { recursive: true });
    fs.writeFileSync(path.join(dir, n), c);
  }
}

test('getConfigFilenames: missing or empty dir, undetectable and empty files are errors', () => {
  const d = tmp();
  assert.throws(() => getConfigFilenames('/nonexistent/dir'), /no networks found/);
  assert.throws(() => getConfigFilenames(d), /no networks found/);
  put(d, { 'undetectable.file': BRIDGE });
  assert.throws(() => getConfigFilenames(d), /no networks found/);
  put(d, { 'empty.conf': '' });
  assert.throws(() => getConfigFilenames(d), /no valid networks found/);
});

test('getConfigFilenames: sorted by name, invalid candidates skipped with a warning', () => {
  const d = tmp();
  const log = new MemoryLogger();
  put(d, {
    '05-broken.conflist': '{not json',
    '06-noplugins.conflist': JSON.stringify({ name: 'x', plugins: [] }),
    '07-notype.conf': JSON.stringify({ name: 'x' }),
    '08-list-in-conf.conf': LIST,
    '09-badtype.conflist': JSON.stringify({ name: 'x', plugins: [{ type: 7 }] }),
    '10-noname.conflist': JSON.stringify({ plugins: [{ type: 'a' }] }),
    '11-huge.conflist': '{"name":"x","plugins":[{"type":"a","n":1e400}]}',
    '12-badversions.conflist': JSON.stringify({ name: 'x', cniVersions: ['1.x'], plugins: [{ type: 'a' }] }),
    '13-badbool.conflist': JSON.stringify({ name: 'x', disableCheck: 'maybe', plugins: [{ type: 'a' }] }),
    '14-dns.conf': JSON.stringify({ name: 'x', type: 'a', dns: { nameservers: [1] } }),
    '20-list.conflist': LIST,
    '15-regular.conf': BRIDGE,
    'a-dir.conf/x': '',
  });
  assert.deepEqual(getConfigFilenames(d, log), ['15-regular.conf', '20-list.conflist']);
  assert.equal(log.entries.filter((e) => e.level === 'warn').length, 10);
});

test('getConfigFilenames: libcni details: case-insensitive keys, side-directory plugins, a file named .conf', () => {
  const d = tmp();
  put(d, {
    '01-upper.conf': JSON.stringify({ name: 'x', Type: 'bridge' }),
    '02-side.conflist': JSON.stringify({ name: 'side' }),
    'side/p.conf': JSON.stringify({ type: 'bridge' }),
    '03-inlined-only.conflist': JSON.stringify({ name: 'side', loadOnlyInlinedPlugins: true }),
    '.conf': BRIDGE,
  });
  assert.deepEqual(getConfigFilenames(d), ['.conf', '01-upper.conf', '02-side.conflist']);
});

test('getCNIConfigFilepath: standalone names, .conf/.conflist fallbacks, first valid when unnamed', async () => {
  const d = tmp();
  put(d, { 'bridge.conf': BRIDGE, 'list.conflist': LIST });
  assert.equal(await getCNIConfigFilepath(undefined, '', d, false), path.join(d, 'YYY-istio-cni.conf'));
  assert.equal(await getCNIConfigFilepath(undefined, 'specific.conf', d, false), path.join(d, 'specific.conf'));
  assert.equal(await getCNIConfigFilepath(undefined, '', d, true), path.join(d, 'bridge.conf'));
  assert.equal(await getCNIConfigFilepath(undefined, 'list.conflist', d, true), path.join(d, 'list.conflist'));
  assert.equal(await getCNIConfigFilepath(undefined, 'list.conf', d, true), path.join(d, 'list.conflist'));
  assert.equal(await getCNIConfigFilepath(undefined, 'bridge.conflist', d, true), path.join(d, 'bridge.conf'));
});

test('getCNIConfigFilepath: waits for a delayed file (event-driven), and gives up when aborted', async () => {
  for (const named of ['', 'bridge.conf']) {
    const d = tmp();
    const started = Date.now();
    const p = getCNIConfigFilepath(AbortSignal.timeout(5000), named, d, true, { pollMs: 60_000 });
    let settled = false;
    void p.finally(() => (settled = true));
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(settled, false, 'still waiting');
    put(d, { 'bridge.conf': BRIDGE });
    assert.equal(await p, path.join(d, 'bridge.conf'));
    assert.ok(Date.now() - started < 2000, 'woken by the file event, not a timer');
  }
  const d = tmp();
  await assert.rejects(getCNIConfigFilepath(AbortSignal.timeout(50), 'never.conf', d, true), { name: 'AbortedError' });
});

test('getCNIConfigFilepath: a net dir that does not exist yet is noticed when it appears (poll)', async () => {
  const parent = tmp();
  const d = path.join(parent, 'net.d');
  const p = getCNIConfigFilepath(AbortSignal.timeout(5000), '', d, true, { pollMs: 50 });
  await new Promise((r) => setTimeout(r, 100));
  put(d, { '10-x.conflist': LIST });
  assert.equal(await p, path.join(d, '10-x.conflist'));
});

function cfgFor(dir: string, over: Partial<InstallConfig> = {}): InstallConfig {
  return installConfig({ mountedCNINetDir: dir, chainedCNIPlugin: true, ...over });
}
const OWNED = { ambientEnabled: true, istioOwnedCNIConfig: true, istioOwnedCNIConfigFilename: '02-istio-conf.conflist' };

// Istio's TestCheckInstall matrix, with our own fixtures.
const checkCases: { name: string; valid: boolean; file: string; files: Record<string, string>; cfg: Partial<InstallConfig> }[] = [
  { name: 'preempted config', valid: false, file: 'list.conflist', files: { 'bridge.conf': BRIDGE, 'list.conflist': LIST_WITH_ISTIO }, cfg: {} },
  {
    name: 'intentional preempted config invalid',
    valid: false,
    file: 'invalid-arr.conflist',
    files: { 'bridge.conf': BRIDGE, 'invalid-arr.conflist': '[]' },
    cfg: { cniConfName: 'invalid-arr.conflist' },
  },
  {
    name: 'intentional preempted config, missing istio owned config',
    valid: false,
    file: 'list.conflist',
    files: { 'bridge.conf': BRIDGE, 'list.conflist': LIST_WITH_ISTIO },
    cfg: { cniConfName: 'list.conflist', ...OWNED },
  },
  {
    name: 'intentional preempted config',
    valid: true,
    file: 'list.conflist',
    files: { 'bridge.conf': BRIDGE, 'list.conflist': LIST_WITH_ISTIO },
    cfg: { cniConfName: 'list.conflist' },
  },
  { name: 'CNI config file removed', valid: false, file: 'file-removed.conflist', files: {}, cfg: { chainedCNIPlugin: false } },
  { name: 'istio-cni removed - istio owned', valid: false, file: '02-istio-conf.conflist', files: { '02-istio-conf.conflist': LIST }, cfg: OWNED },
  { name: 'istio-cni removed', valid: false, file: 'list.conflist', files: { 'list.conflist': LIST }, cfg: {} },
  { name: 'chained - istio owned', valid: true, file: '02-istio-conf.conflist', files: { '02-istio-conf.conflist': LIST_WITH_ISTIO }, cfg: OWNED },
  {
    name: 'custom owned name, owned file first',
    valid: true,
    file: '01-istio-conf.conflist',
    files: { '01-istio-conf.conflist': LIST_WITH_ISTIO },
    cfg: { ...OWNED, istioOwnedCNIConfigFilename: '01-istio-conf.conflist' },
  },
  {
    name: 'custom owned name, owned file absent',
    valid: false,
    file: 'list.conflist',
    files: { 'list.conflist': LIST_WITH_ISTIO },
    cfg: { ...OWNED, istioOwnedCNIConfigFilename: '01-istio-conf.conflist' },
  },
  { name: 'chained', valid: true, file: 'list.conflist', files: { 'list.conflist': LIST_WITH_ISTIO }, cfg: {} },
  { name: 'standalone, not ours', valid: false, file: 'bridge.conf', files: { 'bridge.conf': BRIDGE }, cfg: { chainedCNIPlugin: false } },
  { name: 'standalone', valid: true, file: 'istio-cni.conf', files: { 'istio-cni.conf': STANDALONE }, cfg: { chainedCNIPlugin: false } },
  {
    name: 'owned file lacks a plugin of the primary',
    valid: false,
    file: '02-istio-conf.conflist',
    files: {
      '02-istio-conf.conflist': insertCNIConfig(ISTIO, JSON.stringify({ name: 'n', plugins: [{ type: 'bridge' }] })),
      'list.conflist': LIST,
    },
    cfg: OWNED,
  },
  {
    name: 'owned file carries every plugin of the primary',
    valid: true,
    file: '02-istio-conf.conflist',
    files: { '02-istio-conf.conflist': LIST_WITH_ISTIO, 'list.conflist': LIST },
    cfg: OWNED,
  },
];

for (const c of checkCases) {
  test(`checkValidCNIConfig: ${c.name}`, async () => {
    const d = tmp();
    put(d, c.files);
    const v = await checkValidCNIConfig(AbortSignal.timeout(2000), cfgFor(d, c.cfg), path.join(d, c.file), { pollMs: 50 });
    assert.equal(v.valid, c.valid, v.valid ? 'valid' : v.reason);
  });
}

test('checkValidCNIConfig records the primary config name where upstream does', async () => {
  const d = tmp();
  put(d, { '10-a.conflist': LIST, '20-b.conflist': LIST });
  const cfg = cfgFor(d);
  assert.equal((await checkValidCNIConfig(undefined, cfg, '')).valid, false);
  assert.equal(cfg.cniConfName, '10-a.conflist');
  const owned = cfgFor(d, OWNED);
  put(d, { '02-istio-conf.conflist': LIST_WITH_ISTIO });
  assert.equal((await checkValidCNIConfig(undefined, owned, '')).valid, false);
  assert.equal(owned.cniConfName, '10-a.conflist', 'the second file when ours is first');
});

test('chained write: x.conf becomes x.conflist with no instant where x.conf holds a list', async () => {
  const d = tmp();
  put(d, { '10-bridge.conf': BRIDGE });
  fs.chmodSync(path.join(d, '10-bridge.conf'), 0o644);
  const out = await createCNIConfigFile(undefined, cfgFor(d));
  assert.equal(out, path.join(d, '10-bridge.conflist'));
  assert.deepEqual(fs.readdirSync(d), ['10-bridge.conflist']);
  assert.equal(fs.statSync(out).mode & 0o777, 0o644, "the primary's mode is kept");
});

test('owned and standalone writes use 0600, or 0640 with group read', async () => {
  const d = tmp();
  put(d, { '10-list.conflist': LIST });
  const owned = await createCNIConfigFile(undefined, cfgFor(d, { ...OWNED, cniConfName: '10-list.conflist' }));
  assert.equal(fs.statSync(owned).mode & 0o777, 0o600);
  assert.equal(fs.readFileSync(path.join(d, '10-list.conflist'), 'utf8'), LIST, 'primary untouched');
  const st = await createCNIConfigFile(undefined, cfgFor(d, { chainedCNIPlugin: false, cniConfGroupRead: true }));
  assert.equal(fs.statSync(st).mode & 0o777, 0o640);
  await assert.rejects(createCNIConfigFile(undefined, cfgFor(d, OWNED)), /primary CNI config name is not specified/);
});

test('chained write: a primary rewrite between our merge and our rename is merged again, not overwritten', async () => {
  const d = tmp();
  const file = path.join(d, '10-list.conflist');
  put(d, { '10-list.conflist': LIST });
  const newer = JSON.stringify({ cniVersion: '0.4.0', name: 'dbnet', plugins: [{ type: 'bridge', mtu: 1400 }, { type: 'tuning' }] });
  const log = new MemoryLogger();
  let rewrites = 0;
  const out = await createCNIConfigFile(undefined, cfgFor(d), {
    log,
    beforeRename: () => {
      // The primary CNI replaces its file (atomically, as CNI agents do) once, at the worst moment.
      if (rewrites++ > 0) return;
      fs.writeFileSync(`${file}.primary`, newer);
      fs.renameSync(`${file}.primary`, file);
    },
  });
  assert.equal(out, file);
  assert.equal(rewrites, 2, 'a second merge after the first was refused');
  assert.equal(fs.readFileSync(file, 'utf8'), insertCNIConfig(pluginConfigText(cfgFor(d)), newer), "the primary's update kept, our entry added");
  assert.ok(
    log.entries.some((e) => e.msg.includes('merging into the new version')),
    JSON.stringify(log.entries),
  );
  assert.deepEqual(fs.readdirSync(d), ['10-list.conflist'], 'no temporary file left');
});

test('chained write: a primary that never stops rewriting: after 5 refused merges our entry is written anyway, as upstream does', async () => {
  const d = tmp();
  const file = path.join(d, '10-list.conflist');
  put(d, { '10-list.conflist': LIST });
  const log = new MemoryLogger();
  let n = 0;
  const version = (i: number) => JSON.stringify({ cniVersion: '0.4.0', name: 'dbnet', plugins: [{ type: 'bridge', mtu: 1000 + i }] });
  const out = await createCNIConfigFile(undefined, cfgFor(d), {
    log,
    beforeRename: () => {
      n++;
      fs.writeFileSync(`${file}.primary`, version(n));
      fs.renameSync(`${file}.primary`, file);
    },
  });
  assert.equal(out, file);
  assert.equal(n, 5, 'five checked merges, each refused');
  assert.equal(fs.readFileSync(file, 'utf8'), insertCNIConfig(pluginConfigText(cfgFor(d)), version(5)), 'merged into the version read last');
  assert.ok(
    log.entries.some((e) => e.level === 'warn' && e.msg.includes('writing it anyway')),
    JSON.stringify(log.entries),
  );
  assert.deepEqual(fs.readdirSync(d), ['10-list.conflist']);
});
