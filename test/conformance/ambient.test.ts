// Istio's ambient nftables goldens (cni/pkg/nftables): in-pod and host transactions, byte for
// byte after TrimSpace, through the library and through `rules --dry-run --ambient`.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildHostRules, buildInpodRules } from '../../src/ambient/build';
import { parseAmbientConfig, parseHostRuleParams, parsePodOverrides } from '../../src/ambient/config';
import { FakeNft } from '../../src/nft/fake';
import { render } from '../../src/nft/transaction';
import { Case, PACKAGE_ROOT, loadSuite, trimSpace } from '../support/conformance';
import { tempDir } from '../support/tmp';

const cases = loadSuite('ambient');
const BIN = path.join(PACKAGE_ROOT, 'bin', 'istio-cni-ts.js');

function build(c: Case): string {
  const cfg = parseAmbientConfig(c.input.ambientConfig);
  if (c.input.ruleSet === 'pod') return render(buildInpodRules(cfg, parsePodOverrides(c.input.podOverrides)));
  const { kubeletUID, probeIPSetName } = c.input;
  return render(buildHostRules(cfg, parseHostRuleParams({ kubeletUID, probeIPSetName })));
}

test('ambient suite has its 14 cases: 6 pod cases and 1 host case, each ipv4 and ipv6', { skip: cases.length === 0 && 'conformance dir absent' }, () => {
  assert.equal(cases.length, 14);
  assert.equal(cases.filter((c) => c.input.ruleSet === 'pod').length, 12);
  assert.equal(cases.filter((c) => c.input.ruleSet === 'host').length, 2);
  for (const c of cases) assert.equal(c.input.ambientConfig.enableIPv6, c.case.endsWith('_ipv6'), c.case);
});

for (const c of cases) {
  test(`ambient/${c.case}: config -> golden`, () => {
    assert.equal(trimSpace(build(c)), trimSpace(c.expected!));
  });
}

// Istio's TestInvokedTwiceIsIdempotent: each pod case twice (IPv4), both runs equal the golden;
// and, applied twice to one fake nft, the second run leaves the state of the first.
for (const c of cases.filter((x) => x.input.ruleSet === 'pod' && x.case.endsWith('_ipv4'))) {
  test(`ambient/${c.case}: invoked twice is idempotent`, () => {
    const cfg = parseAmbientConfig(c.input.ambientConfig);
    const overrides = parsePodOverrides(c.input.podOverrides);
    const first = buildInpodRules(cfg, overrides);
    const second = buildInpodRules(cfg, overrides);
    assert.equal(trimSpace(render(first)), trimSpace(c.expected!));
    assert.equal(trimSpace(render(second)), trimSpace(c.expected!));
    const nft = new FakeNft();
    nft.run(first);
    const once = nft.dump();
    nft.run(second);
    assert.equal(nft.dump(), once);
  });
}

// The CLI takes one flat object: ambientConfig's keys plus the pod or host keys.
const cleanEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
const tmp = tempDir(path.join(os.tmpdir(), 'icts-ambient-conf-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

for (const c of cases) {
  test(`ambient/${c.case}: rules --dry-run --ambient ${c.input.ruleSet} --config FILE -> golden`, () => {
    const own = c.input.ruleSet === 'pod' ? c.input.podOverrides : { kubeletUID: c.input.kubeletUID, probeIPSetName: c.input.probeIPSetName };
    const file = path.join(tmp, `${c.case}.json`);
    fs.writeFileSync(file, JSON.stringify({ ...c.input.ambientConfig, ...own }));
    const r = spawnSync(process.execPath, [BIN, 'rules', '--dry-run', '--ambient', c.input.ruleSet, '--config', file], {
      env: cleanEnv,
      encoding: 'utf8',
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.equal(trimSpace(r.stdout), trimSpace(c.expected!));
  });
}
