// `rules --dry-run --ambient pod|host --config FILE` as a user meets it: bad input exits 2 with
// one line naming the key and the value.
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
const dir = tempDir(path.join(os.tmpdir(), 'icts-ambient-cli-'));
process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;

function run(args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args], { env, encoding: 'utf8' });
}

function file(content: string): string {
  const p = path.join(dir, `c${n++}.json`);
  fs.writeFileSync(p, content);
  return p;
}

function assertBadInput(args: string[], mustName: string[]) {
  const r = run(args);
  assert.equal(r.status, 2, `exit code for ${args.join(' ')}: ${r.stderr}`);
  assert.equal(r.stdout, '', 'nothing on stdout');
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line: ${r.stderr}`);
  for (const m of mustName) assert.ok(r.stderr.includes(m), `stderr names ${m}: ${r.stderr}`);
}

const pod = (obj: object) => ['rules', '--dry-run', '--ambient', 'pod', '--config', file(JSON.stringify(obj))];
const host = (obj: object) => ['rules', '--dry-run', '--ambient', 'host', '--config', file(JSON.stringify(obj))];

test("unknown keys, including the other rule set's, are refused", () => {
  assertBadInput(pod({ enableIpv6: true }), ['config key "enableIpv6"', 'unknown config key']);
  assertBadInput(pod({ kubeletUID: '0' }), ['config key "kubeletUID"']);
  assertBadInput(host({ kubeletUID: '0', dnsProxy: 'PodDNSEnabled' }), ['config key "dnsProxy"']);
});

test('bad values are refused naming key and value', () => {
  assertBadInput(pod({ dnsProxy: 'yes' }), ['config key "dnsProxy"', '"yes"']);
  assertBadInput(pod({ virtualInterfaces: ['eth0 accept'] }), ['config key "virtualInterfaces"', 'eth0 accept']);
  assertBadInput(pod({ hostProbeSNATAddress: '300.1.1.1' }), ['config key "hostProbeSNATAddress"', '300.1.1.1']);
  assertBadInput(pod({ enableIPv6: 'true' }), ['config key "enableIPv6"', '"true"']);
  assertBadInput(host({ kubeletUID: 'kubelet' }), ['config key "kubeletUID"', '"kubelet"']);
  assertBadInput(host({}), ['config key "kubeletUID"', 'required']);
  assertBadInput(host({ kubeletUID: 0, probeIPSetName: '@x' }), ['config key "probeIPSetName"', '"@x"']);
});

test('file problems name --config and the path', () => {
  assertBadInput(['rules', '--dry-run', '--ambient', 'pod', '--config', file('{nope')], ['--config', 'not valid JSON']);
  assertBadInput(['rules', '--dry-run', '--ambient', 'pod', '--config', file('[]')], ['--config', 'JSON object']);
  assertBadInput(['rules', '--dry-run', '--ambient', 'pod', '--config', '/nonexistent/a.json'], ['--config', '/nonexistent/a.json']);
});

test('--ambient needs --config, takes pod or host, and no capture flags', () => {
  assertBadInput(['rules', '--dry-run', '--ambient', 'pod'], ['config']);
  assertBadInput(['rules', '--dry-run', '--ambient', 'node', '--config', file('{}')], ['ambient', 'node']);
  assertBadInput([...pod({}), '-p', '15001'], ['--ambient', '--envoy-port']);
  assertBadInput([...pod({}), '--ipv6'], ['--ambient', '--ipv6']);
});

test('defaults: an empty pod config gives IPv4 rules with the production probe address and no DNS', () => {
  const r = run(pod({}));
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /ip saddr 169\.254\.7\.127 counter accept/);
  assert.doesNotMatch(r.stdout, /ip6|15053|istio-ambient-raw/);
  const h = run(host({ kubeletUID: 0, enableIPv6: true }));
  assert.equal(h.status, 0, h.stderr);
  assert.match(h.stdout, /skuid 0 ip6 daddr @istio-inpod-probes-v6 counter snat to fd16:9254:7127:1337:ffff:ffff:ffff:ffff\n/);
});

test('--help documents --ambient', () => {
  const r = run(['rules', '--help']);
  assert.equal(r.status, 0);
  assert.match(r.stdout, /--ambient/);
  assert.match(r.stdout, /kubeletUID/);
});
