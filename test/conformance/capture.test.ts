import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { buildCapture } from '../../src/capture/build';
import { parseCaptureConfig } from '../../src/capture/config';
import { render } from '../../src/nft/transaction';
import { PACKAGE_ROOT, loadSuite, trimSpace } from '../support/conformance';

const cases = loadSuite('capture');
const BIN = path.join(PACKAGE_ROOT, 'bin', 'istio-cni-ts.js');

test('capture suite has its 28 cases, 12 with argv', { skip: cases.length === 0 && 'conformance dir absent' }, () => {
  assert.equal(cases.length, 28);
  assert.equal(cases.filter((c) => c.argv).length, 12);
});

for (const c of cases) {
  test(`capture/${c.case}: config -> golden`, () => {
    const got = render(buildCapture(parseCaptureConfig(c.input)));
    assert.equal(trimSpace(got), trimSpace(c.expected!));
  });
}

// Clean environment: istio-iptables' BindEnv variables must not leak in from the test runner.
const cleanEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin' };

for (const c of cases.filter((x) => x.argv)) {
  test(`capture/${c.case}: istio-iptables argv through the CLI -> golden`, () => {
    const r = spawnSync(process.execPath, [BIN, 'rules', '--dry-run', ...c.argv!], { env: cleanEnv, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(trimSpace(r.stdout), trimSpace(c.expected!));
  });
}
