// The rules command as a user meets it: flags, --config files, bad input; and init's --netns.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PACKAGE_ROOT } from '../support/conformance';
import { tempDir } from '../support/tmp';

const BIN = path.join(PACKAGE_ROOT, 'bin', 'istio-cni-ts.js');
const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };

function run(args: string[], extraEnv: Record<string, string> = {}) {
  return spawnSync(process.execPath, [BIN, ...args], { env: { ...env, ...extraEnv }, encoding: 'utf8' });
}

function tmpConfig(content: string): string {
  const dir = tempDir(path.join(os.tmpdir(), 'icts-cfg-'));
  const p = path.join(dir, 'config.json');
  fs.writeFileSync(p, content);
  return p;
}

function assertBadInput(args: string[], mustName: string[], extraEnv: Record<string, string> = {}) {
  const r = run(args, extraEnv);
  assert.equal(r.status, 2, `exit code for ${args.join(' ')}: ${r.stderr}`);
  assert.equal(r.stdout, '', 'nothing on stdout');
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line: ${r.stderr}`);
  for (const m of mustName) assert.ok(r.stderr.includes(m), `stderr names ${m}: ${r.stderr}`);
}

test('bad ports are refused naming the flag and value', () => {
  assertBadInput(['rules', '--dry-run', '-p', 'abc'], ['--envoy-port', '"abc"']);
  assertBadInput(['rules', '--dry-run', '--inbound-capture-port', '70000'], ['--inbound-capture-port', '"70000"']);
  assertBadInput(['rules', '--dry-run', '-b', '80,x'], ['--istio-inbound-ports', '"x"']);
});

test('bad CIDR, interface name and mode are refused', () => {
  assertBadInput(['rules', '--dry-run', '-i', '10.0.0.0/33'], ['--istio-service-cidr', '10.0.0.0/33']);
  assertBadInput(['rules', '--dry-run', '-c', 'eth0;drop'], ['--istio-exclude-interfaces', 'eth0;drop']);
  assertBadInput(['rules', '--dry-run', '-k', 'eth 0'], ['--kube-virt-interfaces', 'eth 0']);
  assertBadInput(['rules', '--dry-run', '-m', 'FOO'], ['--istio-inbound-interception-mode', 'FOO']);
  assertBadInput(['rules', '--dry-run', '-x', '*'], ['--istio-service-exclude-cidr']);
});

test('config file: unknown key, not JSON, bad value', () => {
  assertBadInput(['rules', '--dry-run', '--config', tmpConfig('{"proxyPorts": "15001"}')], ['proxyPorts']);
  assertBadInput(['rules', '--dry-run', '--config', tmpConfig('{not json')], ['--config', 'not valid JSON']);
  assertBadInput(['rules', '--dry-run', '--config', tmpConfig('{"proxyPort": "0"}')], ['config key "proxyPort"', '"0"']);
  assertBadInput(['rules', '--dry-run', '--config', '/nonexistent/cfg.json'], ['--config', '/nonexistent/cfg.json']);
});

test('environment variables are validated and named', () => {
  assertBadInput(['rules', '--dry-run'], ['ISTIO_OUTBOUND_OWNER_GROUPS', 'a;b'], { ISTIO_OUTBOUND_OWNER_GROUPS: 'a;b' });
  assertBadInput(['rules', '--dry-run'], ['REDIRECT_DNS', 'maybe'], { REDIRECT_DNS: 'maybe' });
});

test('init: a --netns or NETWORK_NAMESPACE that is not a network namespace is bad input, one line, nothing applied', () => {
  assertBadInput(['init', '--netns', '/nonexistent/netns'], ['--netns', '/nonexistent/netns', 'does not exist']);
  assertBadInput(['init', '--netns', '/etc/hostname'], ['--netns', '/etc/hostname', 'is not a network namespace']);
  assertBadInput(['init', '--cleanup', '--netns', '/nonexistent/netns'], ['--netns', '/nonexistent/netns']);
  assertBadInput(['init'], ['--network-namespace', '/nonexistent/netns'], { NETWORK_NAMESPACE: '/nonexistent/netns' });
});

test('unknown flags are refused', () => {
  const r = run(['rules', '--dry-run', '--bogus-flag']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /bogus-flag/);
  assert.equal(r.stdout, '');
});

test('flags override the config file, which overrides defaults', () => {
  const cfg = tmpConfig(JSON.stringify({ proxyPort: '16001', inboundPortsInclude: '*', enableIPv6: true }));
  const r = run(['rules', '--dry-run', '--config', cfg, '-p', '17001']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /redirect to :17001\n/);
  assert.doesNotMatch(r.stdout, /:16001/);
  assert.match(r.stdout, /ip6 saddr ::6\/128/, 'enableIPv6 from the file');
  assert.match(r.stdout, /jump istio-in-redirect\n/, 'inbound capture from the file');
});

test('IPv6 rules appear only when asked for', () => {
  const v4 = run(['rules', '--dry-run', '-i', '*']);
  const v6 = run(['rules', '--dry-run', '-i', '*', '--ipv6']);
  assert.equal(v4.status, 0, v4.stderr);
  assert.doesNotMatch(v4.stdout, /ip6/);
  assert.match(v6.stdout, /ip6 daddr ::1\/128/);
});

test('--help documents every istio-iptables flag', () => {
  const r = run(['rules', '--help']);
  assert.equal(r.status, 0);
  for (const flag of [
    '--envoy-port',
    '-p',
    '--istio-inbound-ports',
    '--istio-service-cidr',
    '--kube-virt-interfaces',
    '--redirect-dns',
    '--capture-all-dns',
    '--drop-invalid',
    '--config',
    '--ipv6',
    '--istio-inbound-tproxy-mark',
  ]) {
    assert.ok(r.stdout.includes(flag), flag);
  }
});

test('empty include-inbound-ports with TPROXY gives a transaction with no inbound jump', () => {
  const r = run(['rules', '--dry-run', '-m', 'TPROXY', '-b', '']);
  assert.equal(r.status, 0, r.stderr);
  assert.doesNotMatch(r.stdout, /jump istio-inbound/);
  assert.doesNotMatch(r.stdout, /^insert /m, 'inserts into an empty chain become appends');
});
