import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { normalizeInserts } from '../../src/nft/assemble';
import { FakeNft } from '../../src/nft/fake';
import { RuleBuilder } from '../../src/nft/rule-builder';
import { Family, Op, concat } from '../../src/nft/transaction';
import { loadSuite, trimSpace } from '../support/conformance';

/** The harness' tables and chains made before the operations run (knftables' Fake needs them). */
type PreambleEntry = { add: 'table'; family: Family; name: string } | { add: 'chain'; family: Family; table: string; name: string };

const cases = loadSuite('builder');

test('builder suite has its 8 cases', { skip: cases.length === 0 && 'conformance dir absent' }, () => {
  assert.equal(cases.length, 8);
});

for (const c of cases) {
  test(`builder/${c.case}: state after the transaction -> golden`, () => {
    const rb = new RuleBuilder(c.input.config.enableIPv6);
    for (const o of c.input.operations) {
      switch (o.method) {
        case 'AppendRule':
          rb.append(o.table, o.chain, ...o.params);
          break;
        case 'InsertRule':
          rb.insert(o.table, o.chain, o.position, ...o.params);
          break;
        case 'AppendV6RuleIfSupported':
          rb.appendV6(o.table, o.chain, ...o.params);
          break;
        case 'InsertV6RuleIfSupported':
          rb.insertV6(o.table, o.chain, o.position, ...o.params);
          break;
        default:
          throw new Error(`unknown method ${o.method}`);
      }
    }
    const tx: Op[] = (c.input.harness.preamble as PreambleEntry[]).map((p): Op =>
      p.add === 'table'
        ? { verb: 'add', kind: 'table', family: p.family, table: p.name }
        : { verb: 'add', kind: 'chain', family: p.family, table: p.table, chain: p.name },
    );
    const table = c.input.harness.rulesFromTable;
    for (const r of normalizeInserts(rb.rules(table), 'empty-or-past-end')) {
      const base = { family: 'inet' as const, table, chain: r.chain, rule: concat(r.tokens) };
      tx.push(r.index === undefined ? { verb: 'add', kind: 'rule', ...base } : { verb: 'insert', kind: 'rule', ...base, index: r.index });
    }
    const fake = new FakeNft();
    fake.run(tx);
    assert.equal(trimSpace(fake.dump()), trimSpace(c.expected!));
  });
}
