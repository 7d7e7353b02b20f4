// Istio's install goldens (cni/pkg/install): CNI config chaining, byte for byte, driven through
// the installer with each case's inputs.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createCNIConfigFile, insertCNIConfig } from '../../src/installer/cniconfig';
import { InstallConfig, PluginLogLevel, installConfig, parseEnablementSelectors, pluginConfigText, splitExcludeNamespaces } from '../../src/installer/config';
import { Installer } from '../../src/installer/installer';
import { Case, loadSuite, trimSpace } from '../support/conformance';
import { tempDir as registeredTempDir } from '../support/tmp';

const cases = loadSuite('install');

function tempDir(): string {
  return registeredTempDir(path.join(os.tmpdir(), 'icts-install-conf-'));
}

function listDir(dir: string): Record<string, string> {
  return Object.fromEntries(
    fs
      .readdirSync(dir)
      .sort()
      .map((f) => [f, fs.readFileSync(path.join(dir, f), 'utf8')]),
  );
}

/** The case's InstallConfig, parsed as the agent parses its environment. */
function configOf(c: Case, netDir: string): InstallConfig {
  const ic = c.input.installConfig;
  return installConfig({
    mountedCNINetDir: netDir,
    cniConfName: ic.cniConfName ?? '',
    chainedCNIPlugin: ic.chainedCNIPlugin,
    istioOwnedCNIConfig: ic.istioOwnedCNIConfig ?? false,
    istioOwnedCNIConfigFilename: ic.istioOwnedCNIConfigFilename ?? '',
    pluginLogLevel: (ic.pluginLogLevel ?? 'info') as PluginLogLevel,
    cniAgentRunDir: ic.cniAgentRunDir ?? '/var/run/istio-cni',
    podNamespace: ic.podNamespace ?? '',
    ambientEnabled: ic.ambientEnabled ?? false,
    nativeNftables: ic.nativeNftables ?? false,
    enablementSelectors: parseEnablementSelectors('ambientEnablementSelector', ic.ambientEnablementSelector ?? ''),
    excludeNamespaces: splitExcludeNamespaces(ic.excludeNamespaces ?? ''),
    enableAmbientDetectionRetry: ic.enableAmbientDetectionRetry ?? false,
    cniConfGroupRead: ic.cniConfGroupRead ?? false,
  });
}

function writeExisting(c: Case, dir: string): void {
  for (const [name, f] of Object.entries(c.input.existingFiles as Record<string, { content: string }>)) {
    fs.writeFileSync(path.join(dir, name), f.content, { mode: 0o644 });
  }
}

test('install suite has its 22 cases: 16 goldens, 6 expected errors', { skip: cases.length === 0 && 'conformance dir absent' }, () => {
  assert.equal(cases.length, 22);
  assert.equal(cases.filter((c) => c.expectError).length, 6);
  assert.equal(cases.filter((c) => !c.expectError && typeof c.expected === 'string').length, 16);
});

for (const c of cases.filter((x) => x.case.startsWith('insert-'))) {
  test(`install/${c.case}`, () => {
    const run = () => insertCNIConfig(c.input.istioPluginConfig, c.input.existingConfig);
    if (c.expectError) {
      assert.throws(run);
      return;
    }
    const got = run();
    assert.equal(got, c.expected, 'byte-for-byte');
    assert.equal(trimSpace(got), trimSpace(c.expected!));
  });
}

for (const c of cases.filter((x) => x.case.startsWith('create-'))) {
  test(`install/${c.case}`, async () => {
    const dir = tempDir();
    try {
      writeExisting(c, dir);
      const cfg = configOf(c, dir);
      // The plugin entry we build from the config is exactly the one upstream builds (struct order).
      assert.equal(pluginConfigText(cfg), c.input.istioPluginConfig);
      const before = listDir(dir);
      const started = Date.now();
      const run = createCNIConfigFile(AbortSignal.timeout(100), cfg, { pollMs: 20 });
      if (c.expectError) {
        await assert.rejects(run);
        assert.ok(Date.now() - started >= 90, 'waited for the deadline');
        assert.deepEqual(listDir(dir), before, 'nothing written');
        return;
      }
      const got = await run;
      assert.equal(got, path.join(dir, c.expectedPath ?? ''));
      const content = fs.readFileSync(got, 'utf8');
      assert.equal(content, c.expected, 'byte-for-byte');
      // No temporary file is left behind.
      assert.deepEqual(
        fs.readdirSync(dir).filter((f) => f.includes('.tmp.')),
        [],
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}

for (const c of cases.filter((x) => x.case.startsWith('cleanup-'))) {
  test(`install/${c.case}`, async () => {
    const netDir = tempDir();
    const binDir = tempDir();
    try {
      writeExisting(c, netDir);
      fs.writeFileSync(path.join(binDir, 'istio-cni'), Buffer.from([1, 2, 3]), { mode: 0o755 });
      const kubeconfig = path.join(netDir, 'kubeconfig');
      fs.writeFileSync(kubeconfig, Buffer.from([1, 2, 3]), { mode: 0o755 });
      const ic = c.input.installConfig;
      const installer = new Installer(
        installConfig({
          mountedCNINetDir: netDir,
          chainedCNIPlugin: ic.chainedCNIPlugin,
          istioOwnedCNIConfig: ic.istioOwnedCNIConfig,
          istioOwnedCNIConfigFilename: ic.istioOwnedCNIConfigFilename,
          cniBinTargetDirs: [binDir],
        }),
      );
      installer.cniConfigFilepath = path.join(netDir, c.expectedPath ?? '');
      installer.kubeconfigFilepath = kubeconfig;
      await installer.cleanup();
      assert.equal(fs.readFileSync(path.join(netDir, c.expectedPath ?? ''), 'utf8'), c.expected, 'byte-for-byte');
      assert.equal(fs.existsSync(kubeconfig), false, 'kubeconfig removed');
      assert.equal(fs.existsSync(path.join(binDir, 'istio-cni')), false, 'binary removed');
    } finally {
      fs.rmSync(netDir, { recursive: true, force: true });
      fs.rmSync(binDir, { recursive: true, force: true });
    }
  });
}
