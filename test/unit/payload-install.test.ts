// The installer ships the self-contained payload (docs/payload.md): the shim as the plugin binary
// and istio-cni-ts/ (the standalone plugin, its addon and libraries) beside it, copied atomically
// and left alone when unchanged; other directories are still skipped; cleanup removes both.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PLUGIN_PAYLOAD_DIR, copyBinaries, removePayloadDirs } from '../../src/installer/binaries';
import { tempDir } from '../support/tmp';

const tmp = () => tempDir(path.join(os.tmpdir(), 'icts-payload-inst-'));

test('copyBinaries: the plugin payload directory is copied (first), other directories skipped', async () => {
  const src = tmp();
  const dst = tmp();
  fs.writeFileSync(path.join(src, 'istio-cni'), 'shim', { mode: 0o755 });
  fs.mkdirSync(path.join(src, PLUGIN_PAYLOAD_DIR));
  fs.writeFileSync(path.join(src, PLUGIN_PAYLOAD_DIR, 'istio-cni-plugin'), 'sea', { mode: 0o755 });
  fs.mkdirSync(path.join(src, PLUGIN_PAYLOAD_DIR, 'lib'));
  fs.writeFileSync(path.join(src, PLUGIN_PAYLOAD_DIR, 'lib', 'libnftables.so.1'), 'lib', { mode: 0o644 });
  fs.writeFileSync(path.join(src, PLUGIN_PAYLOAD_DIR, 'MANIFEST'), 'plugin 3 istio-cni-plugin\n', { mode: 0o644 });
  fs.mkdirSync(path.join(src, 'other-dir'));
  fs.writeFileSync(path.join(src, 'other-dir', 'x'), 'x');
  fs.mkdirSync(path.join(dst, PLUGIN_PAYLOAD_DIR));
  fs.writeFileSync(path.join(dst, PLUGIN_PAYLOAD_DIR, 'istio-cni-plugin.tmp.dead01'), 'junk');

  const names = await copyBinaries(src, [dst], 'my-cni');
  assert.deepEqual([...names].sort(), [PLUGIN_PAYLOAD_DIR, 'my-cni']);
  assert.deepEqual(fs.readdirSync(dst).sort(), [PLUGIN_PAYLOAD_DIR, 'my-cni']);
  assert.deepEqual(fs.readdirSync(path.join(dst, PLUGIN_PAYLOAD_DIR)).sort(), ['MANIFEST', 'istio-cni-plugin', 'lib']);
  assert.deepEqual(fs.readdirSync(path.join(dst, PLUGIN_PAYLOAD_DIR, 'lib')), ['libnftables.so.1']);
  assert.equal(fs.statSync(path.join(dst, PLUGIN_PAYLOAD_DIR, 'istio-cni-plugin')).mode & 0o777, 0o755);
  assert.equal(fs.statSync(path.join(dst, PLUGIN_PAYLOAD_DIR, 'lib', 'libnftables.so.1')).mode & 0o777, 0o644);
  // The manifest the shim checks the others against lands after them (newest change time).
  const ctime = (f: string) => fs.statSync(path.join(dst, PLUGIN_PAYLOAD_DIR, f)).ctimeMs;
  assert.ok(ctime('MANIFEST') >= ctime('istio-cni-plugin') && ctime('MANIFEST') >= ctime('lib/libnftables.so.1'), 'MANIFEST copied last');

  const ino = fs.statSync(path.join(dst, PLUGIN_PAYLOAD_DIR, 'istio-cni-plugin')).ino;
  await copyBinaries(src, [dst], 'my-cni');
  assert.equal(fs.statSync(path.join(dst, PLUGIN_PAYLOAD_DIR, 'istio-cni-plugin')).ino, ino, 'unchanged: not rewritten');
  fs.writeFileSync(path.join(src, PLUGIN_PAYLOAD_DIR, 'istio-cni-plugin'), 'sea v2', { mode: 0o755 });
  await copyBinaries(src, [dst], 'my-cni');
  assert.equal(fs.readFileSync(path.join(dst, PLUGIN_PAYLOAD_DIR, 'istio-cni-plugin'), 'utf8'), 'sea v2');

  await removePayloadDirs(src, [dst]);
  assert.deepEqual(fs.readdirSync(dst), ['my-cni']);
});

test('removePayloadDirs leaves the target alone when our payload has no such directory', async () => {
  const src = tmp();
  const dst = tmp();
  fs.mkdirSync(path.join(dst, PLUGIN_PAYLOAD_DIR));
  await removePayloadDirs(src, [dst]);
  assert.deepEqual(fs.readdirSync(dst), [PLUGIN_PAYLOAD_DIR]);
});
