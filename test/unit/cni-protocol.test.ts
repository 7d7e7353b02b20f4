// The CNI execution protocol (dispatchCni) with a stub plugin: every command and version, the
// error codes, VERSION, prevResult pass-through, and that stdout only ever holds one JSON document.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { CniError, CniErrorResult, ErrorCode } from '../../src/cni/errors';
import { CniPlugin, dispatchCni } from '../../src/cni/skel';
import { internalError } from '../../src/plugin/errors';
import { SUPPORTED_VERSIONS } from '../../src/cni/version';
import { passThroughResult } from '../../src/cni/netconf';

const baseEnv = (cmd: string, over: Record<string, string | undefined> = {}) => {
  const e: Record<string, string | undefined> = {
    CNI_COMMAND: cmd,
    CNI_CONTAINERID: 'abc123',
    CNI_NETNS: '/var/run/netns/x',
    CNI_IFNAME: 'eth0',
    CNI_PATH: '/opt/cni/bin',
    ...over,
  };
  return Object.fromEntries(Object.entries(e).filter(([, v]) => v !== undefined)) as Record<string, string>;
};
const conf = (version: string | undefined, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ ...(version === undefined ? {} : { cniVersion: version }), name: 'k8s-pod-network', type: 'istio-cni', ...extra });

function stub(over: Partial<CniPlugin> = {}) {
  const calls: string[] = [];
  const plugin: CniPlugin = {
    add: async (_req, c) => {
      calls.push('add');
      return passThroughResult(c);
    },
    del: async () => void calls.push('del'),
    check: async () => void calls.push('check'),
    status: async () => void calls.push('status'),
    gc: async (_r, _c, valid) => void calls.push(`gc:${valid.map((v) => `${v.containerId}/${v.ifName}`).join(',')}`),
    classify: internalError,
    ...over,
  };
  return { plugin, calls };
}

/** A document the plugin printed: a result, a version answer, or an error (whose fields are typed). */
type CniDoc = Partial<CniErrorResult> & Record<string, unknown>;

function parseOne(stdout: string): CniDoc {
  assert.ok(stdout.endsWith('\n'), 'stdout ends with a newline');
  assert.equal(stdout.indexOf('\n'), stdout.length - 1, 'stdout is one line: a single JSON document');
  return JSON.parse(stdout) as CniDoc;
}

async function expectError(env: Record<string, string>, stdin: string, code: number, plugin = stub().plugin) {
  const out = await dispatchCni(env, stdin, plugin);
  assert.equal(out.exitCode, 1, out.stdout);
  const e = parseOne(out.stdout);
  assert.deepEqual(Object.keys(e).sort(), ['cniVersion', 'code', 'details', 'msg']);
  assert.equal(e.code, code, out.stdout);
  assert.equal(typeof e.msg, 'string');
  assert.ok(String(e.msg).length > 0);
  return e as CniErrorResult; // its four keys were checked above
}

test('VERSION lists the supported versions and answers in the version asked', async () => {
  for (const stdin of ['', '{}', 'not json', conf('0.2.0')]) {
    const out = await dispatchCni({ CNI_COMMAND: 'VERSION' }, stdin, stub().plugin);
    assert.equal(out.exitCode, 0);
    assert.deepEqual(parseOne(out.stdout), { cniVersion: '1.1.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
  }
  for (const v of SUPPORTED_VERSIONS) {
    const out = await dispatchCni({ CNI_COMMAND: 'VERSION' }, JSON.stringify({ cniVersion: v }), stub().plugin);
    assert.equal(parseOne(out.stdout).cniVersion, v);
  }
});

test('VERSION needs no other variable', async () => {
  const out = await dispatchCni({ CNI_COMMAND: 'VERSION' }, '', stub().plugin);
  assert.equal(out.exitCode, 0);
});

for (const v of SUPPORTED_VERSIONS) {
  test(`ADD at ${v}: passes prevResult through, or an empty result of ${v}`, async () => {
    const s = stub();
    let out = await dispatchCni(baseEnv('ADD'), conf(v), s.plugin);
    assert.equal(out.exitCode, 0);
    assert.deepEqual(parseOne(out.stdout), { cniVersion: v });
    const prev = {
      cniVersion: v,
      interfaces: [{ name: 'eth0', sandbox: '/x' }],
      ips: [{ address: '10.1.2.3/24', interface: 0 }],
      dns: { nameservers: ['10.96.0.10'] },
      extra: { keep: true },
    };
    out = await dispatchCni(baseEnv('ADD'), conf(v, { prevResult: prev }), s.plugin);
    assert.equal(out.exitCode, 0);
    assert.deepEqual(parseOne(out.stdout), prev);
    assert.deepEqual(s.calls, ['add', 'add']);
  });

  test(`DEL at ${v}: no output, and works without CNI_NETNS`, async () => {
    const s = stub();
    for (const env of [baseEnv('DEL'), baseEnv('DEL', { CNI_NETNS: undefined }), baseEnv('DEL', { CNI_NETNS: '' })]) {
      const out = await dispatchCni(env, conf(v), s.plugin);
      assert.deepEqual(out, { stdout: '', exitCode: 0 });
    }
    assert.deepEqual(s.calls, ['del', 'del', 'del']);
  });

  const checkOk = v !== '0.3.0' && v !== '0.3.1';
  test(`CHECK at ${v}: ${checkOk ? 'allowed, no output' : 'refused with code 1'}`, async () => {
    const s = stub();
    if (checkOk) {
      assert.deepEqual(await dispatchCni(baseEnv('CHECK'), conf(v, { prevResult: { cniVersion: v } }), s.plugin), { stdout: '', exitCode: 0 });
      assert.deepEqual(s.calls, ['check']);
    } else {
      const e = await expectError(baseEnv('CHECK'), conf(v), ErrorCode.IncompatibleVersion, s.plugin);
      assert.match(e.msg, /does not allow CHECK/);
      assert.equal(e.cniVersion, v);
      assert.deepEqual(s.calls, []);
    }
  });

  const newOnly = v === '1.1.0';
  for (const cmd of ['STATUS', 'GC']) {
    test(`${cmd} at ${v}: ${newOnly ? 'allowed' : 'refused with code 1 (needs 1.1.0)'}`, async () => {
      const s = stub();
      const env: Record<string, string> = cmd === 'GC' ? { CNI_COMMAND: 'GC', CNI_PATH: '/opt/cni/bin' } : { CNI_COMMAND: 'STATUS' };
      if (newOnly) {
        assert.deepEqual(await dispatchCni(env, conf(v), s.plugin), { stdout: '', exitCode: 0 });
        assert.equal(s.calls.length, 1);
      } else {
        const e = await expectError(env, conf(v), ErrorCode.IncompatibleVersion, s.plugin);
        assert.match(e.msg, new RegExp(`does not allow ${cmd}`));
      }
    });
  }
}

test('GC hands the valid attachments to the plugin; a malformed list is code 7', async () => {
  const s = stub();
  const attachments = [
    { containerID: 'a1', ifname: 'eth0' },
    { containerID: 'b2', ifname: 'net1' },
  ];
  const out = await dispatchCni({ CNI_COMMAND: 'GC', CNI_PATH: '/opt/cni/bin' }, conf('1.1.0', { 'cni.dev/valid-attachments': attachments }), s.plugin);
  assert.deepEqual(out, { stdout: '', exitCode: 0 });
  assert.deepEqual(s.calls, ['gc:a1/eth0,b2/net1']);
  await expectError({ CNI_COMMAND: 'GC', CNI_PATH: '/x' }, conf('1.1.0', { 'cni.dev/valid-attachments': 'all' }), ErrorCode.InvalidConfig);
  await expectError({ CNI_COMMAND: 'GC' }, conf('1.1.0'), ErrorCode.InvalidEnvironment);
});

test("STATUS not ready: the plugin's code 50 reaches stdout", async () => {
  const s = stub({
    status: async () => {
      throw new CniError(ErrorCode.NotAvailable, 'not ready', 'kubeconfig missing');
    },
  });
  const e = await expectError({ CNI_COMMAND: 'STATUS' }, conf('1.1.0'), 50, s.plugin);
  assert.deepEqual(e, { cniVersion: '1.1.0', code: 50, msg: 'not ready', details: 'kubeconfig missing' });
});

test('code 4: missing or unknown CNI_COMMAND, missing and invalid CNI_* variables (named)', async () => {
  let e = await expectError({}, conf('1.0.0'), 4);
  assert.match(e.msg, /CNI_COMMAND/);
  e = await expectError({ CNI_COMMAND: 'FROB' }, conf('1.0.0'), 4);
  assert.match(e.msg, /FROB/);
  e = await expectError({ CNI_COMMAND: 'add' }, conf('1.0.0'), 4); // commands are upper case
  for (const v of ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME']) {
    e = await expectError(baseEnv('ADD', { [v]: undefined }), conf('1.0.0'), 4);
    assert.match(e.msg, new RegExp(v));
    e = await expectError(baseEnv('CHECK', { [v]: '' }), conf('1.0.0'), 4);
    assert.match(e.msg, new RegExp(v));
  }
  e = await expectError(baseEnv('ADD', { CNI_CONTAINERID: undefined, CNI_IFNAME: undefined }), conf('1.0.0'), 4);
  assert.match(e.msg, /CNI_CONTAINERID,CNI_IFNAME/);
  e = await expectError(baseEnv('DEL', { CNI_IFNAME: undefined }), conf('1.0.0'), 4);
  e = await expectError(baseEnv('ADD', { CNI_CONTAINERID: '-bad id' }), conf('1.0.0'), 4);
  assert.match(e.msg, /CNI_CONTAINERID/);
  for (const bad of ['eth 0', 'a/b', 'a:b', '.', '..', 'x'.repeat(16)]) {
    e = await expectError(baseEnv('ADD', { CNI_IFNAME: bad }), conf('1.0.0'), 4);
    assert.match(e.msg, /CNI_IFNAME/);
  }
});

test('CNI_PATH is optional for ADD, DEL and CHECK (the spec lists it as optional)', async () => {
  const out = await dispatchCni(baseEnv('ADD', { CNI_PATH: undefined }), conf('1.0.0'), stub().plugin);
  assert.equal(out.exitCode, 0);
});

test('code 6: stdin that is not a JSON object, or a cniVersion that is not a version string', async () => {
  for (const stdin of ['', '{', 'null', '[1]', '"x"', '{"cniVersion": 1, "name": "n"}']) {
    await expectError(baseEnv('ADD'), stdin, ErrorCode.DecodingFailure);
  }
  const e = await expectError(baseEnv('ADD'), conf('one'), ErrorCode.DecodingFailure);
  assert.match(e.details, /"one"/);
  assert.equal(e.cniVersion, '1.1.0', 'an unusable version answers in our newest');
});

test('code 1: unsupported versions (0.1.0 when cniVersion is absent, 0.2.0, 2.0.0)', async () => {
  for (const v of [undefined, '0.1.0', '0.2.0', '1.2.0', '2.0.0']) {
    const e = await expectError(baseEnv('ADD'), conf(v), ErrorCode.IncompatibleVersion);
    assert.match(e.details, /plugin supports \[0\.3\.0 0\.3\.1 0\.4\.0 1\.0\.0 1\.1\.0\]/);
  }
});

test('code 7: missing or invalid network name, invalid prevResult', async () => {
  let e = await expectError(baseEnv('ADD'), JSON.stringify({ cniVersion: '1.0.0', type: 'istio-cni' }), ErrorCode.InvalidConfig);
  assert.match(e.msg, /network name/);
  e = await expectError(baseEnv('ADD'), JSON.stringify({ cniVersion: '1.0.0', name: 'has space' }), ErrorCode.InvalidConfig);
  for (const [prev, where] of [
    ['x', 'prevResult'],
    [{ ips: {} }, 'prevResult.ips'],
    [{ ips: [{ address: '10.0.0.2' }] }, 'prevResult.ips[0].address'],
    [{ ips: [{ address: '10.0.0.2/24', gateway: 'nope' }] }, 'prevResult.ips[0].gateway'],
    [{ interfaces: [], ips: [{ address: '10.0.0.2/24', interface: 0 }] }, 'prevResult.ips[0].interface'],
  ] as const) {
    e = await expectError(baseEnv('ADD'), conf('1.0.0', { prevResult: prev }), ErrorCode.InvalidConfig);
    assert.ok(e.details.startsWith(where), e.details);
  }
});

test('config keys are read as Go reads them: case-insensitively, null = absent', async () => {
  const s = stub();
  const out = await dispatchCni(baseEnv('ADD'), JSON.stringify({ CNIVERSION: '0.4.0', Name: 'n', prevresult: null }), s.plugin);
  assert.equal(out.exitCode, 0, out.stdout);
  assert.deepEqual(parseOne(out.stdout), { cniVersion: '0.4.0' });
  // prevResult's own version key, in any case, is replaced by the config's.
  const out2 = await dispatchCni(baseEnv('ADD'), conf('1.0.0', { prevResult: { cniversion: '1.0.0', ips: [] } }), s.plugin);
  assert.deepEqual(parseOne(out2.stdout), { cniVersion: '1.0.0', ips: [] });
});

test('plugin errors: a CniError keeps its code; anything else is code 100 with its message', async () => {
  let s = stub({
    add: async () => {
      throw new CniError(123, 'custom', 'why');
    },
  });
  assert.deepEqual(await expectError(baseEnv('ADD'), conf('0.3.1'), 123, s.plugin), { cniVersion: '0.3.1', code: 123, msg: 'custom', details: 'why' });
  s = stub({
    del: async () => {
      throw new TypeError('boom');
    },
  });
  const e = await expectError(baseEnv('DEL'), conf('1.0.0'), 100, s.plugin);
  assert.match(e.details, /boom/);
});

test('the error result carries the config version when it is one we speak', async () => {
  const s = stub({
    add: async () => {
      throw new CniError(105, 'x');
    },
  });
  for (const v of SUPPORTED_VERSIONS) {
    const e = await expectError(baseEnv('ADD'), conf(v), 105, s.plugin);
    assert.equal(e.cniVersion, v);
  }
});
