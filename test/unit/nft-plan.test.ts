// The apply plan and the kernel-like fake: a fresh netns gets the golden text alone, a re-apply
// deletes exactly what is stale (tables a new config drops, chains flush would leave behind),
// and removal deletes only what is there.
import { describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { buildCapture } from '../../src/capture/build';
import { parseCaptureConfig } from '../../src/capture/config';
import { SIDECAR_TABLES } from '../../src/capture/tables';
import { FakeNft, parseScript } from '../../src/nft/fake';
import { parseListing, planRemove, planReplace } from '../../src/nft/plan';
import { Transaction, render } from '../../src/nft/transaction';
import { loadSuite } from '../support/conformance';

const SIDECAR = SIDECAR_TABLES.map((t) => ({ family: t.family, table: t.name }));
const cases = new Map(loadSuite('capture').map((c) => [c.case, c]));
const captureTx = (name: string): Transaction => buildCapture(parseCaptureConfig(cases.get(name)!.input));

/** The fake after applying `tx` into an empty netns. */
const freshDump = (tx: Transaction) => {
  const f = new FakeNft();
  f.runScript(render(tx));
  return f.dump();
};

describe('planReplace', () => {
  test('into a fresh netns every capture golden is sent as it is: no delete, nothing else', () => {
    assert.ok(cases.size > 20);
    for (const name of cases.keys()) {
      const tx = captureTx(name);
      const plan = planReplace(tx, SIDECAR, []);
      assert.equal(render(plan), render(tx), name);
      assert.ok(!render(plan).includes('delete'), name);
    }
  });

  test('TPROXY -> REDIRECT: the mangle and raw tables the new config drops are deleted, first', () => {
    const fake = new FakeNft();
    fake.runScript(render(captureTx('tproxy')));
    const next = captureTx('empty');
    const plan = planReplace(next, SIDECAR, fake.tables());
    const lines = render(plan).split('\n');
    assert.deepEqual(lines.slice(0, 2), ['delete table inet istio-proxy-mangle', 'delete table inet istio-proxy-raw']);
    fake.runScript(render(plan));
    assert.equal(fake.dump(), freshDump(next));
  });

  test('a chain the new config does not declare: flush leaves it, the plan deletes it', () => {
    const first = captureTx('tproxy');
    const second = captureTx('empty');
    const fake = new FakeNft();
    fake.runScript(render(first));
    const declared = (tx: Transaction) => tx.flatMap((op) => (op.kind === 'chain' && op.table === 'istio-proxy-nat' ? [op.chain] : []));
    const stale = declared(first).filter((c) => !declared(second).includes(c));
    assert.ok(stale.length > 0, 'the pair must differ in nat chains');

    // The golden text alone (add + flush) onto the old tables: the fake, like the kernel, keeps
    // the old chains, empty.
    const naive = new FakeNft();
    naive.runScript(render(first));
    naive.runScript(render(second));
    for (const c of stale) assert.match(naive.dump(), new RegExp(`^add chain inet istio-proxy-nat ${c}( \\{.*)?$`, 'm'));
    assert.notEqual(naive.dump(), freshDump(second));

    const plan = render(planReplace(second, SIDECAR, fake.tables()));
    for (const c of stale) {
      const del = `delete chain inet istio-proxy-nat ${c}`;
      assert.ok(plan.includes(`${del}\n`), del);
      // After the table's flush: no rule can still jump to it.
      assert.ok(plan.indexOf(del) > plan.indexOf('flush table inet istio-proxy-nat'));
    }
    fake.runScript(plan);
    assert.equal(fake.dump(), freshDump(second));
  });

  test('re-applying the same config deletes nothing and leaves the same state', () => {
    const tx = captureTx('tproxy');
    const fake = new FakeNft();
    fake.runScript(render(tx));
    const plan = planReplace(tx, SIDECAR, fake.tables());
    assert.equal(render(plan), render(tx));
    fake.runScript(render(plan));
    assert.equal(fake.dump(), freshDump(tx));
  });

  test('tables of others are never touched', () => {
    const state = [{ family: 'inet' as const, table: 'other', chains: ['c'] }, ...SIDECAR.map((t) => ({ ...t, chains: ['x'] }))];
    const plan = render(planReplace(captureTx('empty'), SIDECAR, state));
    assert.ok(!plan.includes('other'));
    assert.ok(plan.includes('delete chain inet istio-proxy-nat x\n'));
  });

  test('removal (DEL, cleanup) deletes only the owned tables the listing shows', () => {
    assert.deepEqual(planRemove(SIDECAR, []), []);
    const plan = planRemove(SIDECAR, [
      { family: 'inet', table: 'istio-proxy-nat', chains: ['output'] },
      { family: 'inet', table: 'other', chains: [] },
    ]);
    assert.equal(render(plan), 'delete table inet istio-proxy-nat\n');
  });
});

describe('parseListing', () => {
  test('reads `list tables` and `list chains` JSON documents, one per line', () => {
    const meta = { metainfo: { version: '1.0.6', json_schema_version: 1 } };
    const text = [
      JSON.stringify({ nftables: [meta, { table: { family: 'inet', name: 't1', handle: 1 } }, { table: { family: 'ip', name: 't2', handle: 2 } }] }),
      JSON.stringify({ nftables: [meta, { chain: { family: 'inet', table: 't1', name: 'c1', handle: 1 } }] }),
      '',
    ].join('\n');
    assert.deepEqual(parseListing(text), [
      { family: 'inet', table: 't1', chains: ['c1'] },
      { family: 'ip', table: 't2', chains: [] },
    ]);
  });
});

describe('FakeNft keeps state as the kernel does', () => {
  test('parses every rendered capture golden back into the same operations', () => {
    for (const name of cases.keys()) {
      const tx = captureTx(name);
      assert.deepEqual(parseScript(render(tx)), tx, name);
    }
  });

  test('add of what exists is kept; delete of what is absent fails, and the whole transaction with it', () => {
    const fake = new FakeNft();
    fake.runScript('add table inet t\nadd chain inet t c\nadd rule inet t c counter\n');
    fake.runScript('add table inet t\nadd chain inet t c\n');
    assert.match(fake.dump(), /add rule inet t c counter/);
    const before = fake.dump();
    assert.throws(() => fake.runScript('add table inet u\ndelete table inet absent\n'), /no such table/);
    assert.throws(() => fake.runScript('delete chain inet t nope\n'), /no such chain/);
    assert.equal(fake.dump(), before, 'a failed transaction changes nothing');
  });

  test('flush table empties chains but keeps them; a chain still jumped to cannot be deleted', () => {
    const fake = new FakeNft();
    fake.runScript('add table inet t\nadd chain inet t a\nadd chain inet t b\nadd rule inet t a counter jump b\n');
    assert.throws(() => fake.runScript('delete chain inet t b\n'), /in use/);
    fake.runScript('flush table inet t\n');
    assert.equal(fake.dump(), 'add table inet t\nadd chain inet t a\nadd chain inet t b\n');
    fake.runScript('delete chain inet t b\n');
    assert.equal(fake.dump(), 'add table inet t\nadd chain inet t a\n');
  });

  test('text it does not understand is refused with the line', () => {
    assert.throws(() => new FakeNft().runScript('add table inet t\nfrobnicate\n'), /line 2 not understood: frobnicate/);
  });
});
