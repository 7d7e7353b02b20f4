// nftRun's conditional job (opts.ifAbsent, native/nft_run.cc): in one job, the script runs only
// if none of the named tables exists in the netns; otherwise nothing changes and the job answers
// with the listing src/nft/plan.ts parses. Checked against the nft CLI on a real kernel, alone
// and under a queue of concurrent jobs.
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { SIDECAR_TABLES } from '../../../src/capture/tables';
import { addon } from '../../../src/netns/addon';
import { parseListing } from '../../../src/nft/plan';
import { render } from '../../../src/nft/transaction';
import { Netns, captureTx, makeNetns, nftCli, openFdCount, removeAllNetns, requireRootAndTools } from './addon-support';

before(() => requireRootAndTools());
after(() => removeAllNetns());

const IF_ABSENT = SIDECAR_TABLES.map((t) => `${t.family} ${t.name}`);
const normalise = (text: string) => text.replace(/ # handle \d+/g, '');

/** The ruleset the nft CLI makes from the script in a netns of its own. */
function cliRuleset(script: string): string {
  const ref = makeNetns();
  try {
    nftCli(ref, ['-f', '-'], script);
    return nftCli(ref, ['list', 'ruleset']);
  } finally {
    ref.remove();
  }
}

/** The netns' tables and chains as the CLI lists them, in parseListing's form. */
function cliState(ns: Netns) {
  return parseListing(nftCli(ns, ['-j', 'list', 'tables']) + '\n' + nftCli(ns, ['-j', 'list', 'chains']));
}

describe('nftRun with opts.ifAbsent', () => {
  test('a fresh netns: applied in the one job, the exact ruleset the CLI makes', async () => {
    for (const name of ['tproxy', 'empty']) {
      const script = render(captureTx(name));
      const ns = makeNetns();
      try {
        const r = await addon().nftRun(ns.path, script, false, false, { ifAbsent: IF_ABSENT });
        assert.equal(r.applied, true);
        assert.equal(r.listing, undefined);
        assert.equal(nftCli(ns, ['list', 'ruleset']), cliRuleset(script), name);
      } finally {
        ns.remove();
      }
    }
  });

  test('a table other than the named ones does not stop the script, and stays', async () => {
    const ns = makeNetns();
    try {
      nftCli(ns, ['add', 'table', 'inet', 'someone-else']);
      const script = render(captureTx('empty'));
      const r = await addon().nftRun(ns.path, script, false, false, { ifAbsent: IF_ABSENT });
      assert.equal(r.applied, true);
      const tables = nftCli(ns, ['list', 'tables']);
      assert.match(tables, /^table inet someone-else$/m);
      assert.match(tables, /^table inet istio-proxy-nat$/m);
    } finally {
      ns.remove();
    }
  });

  test('one of the tables exists: not applied, nothing changed, the listing returned', async () => {
    for (const present of IF_ABSENT) {
      const ns = makeNetns();
      try {
        const [family, table] = present.split(' ');
        nftCli(ns, ['-f', '-'], `add table ${family} ${table}\nadd chain ${family} ${table} stale\nadd table ip other\nadd chain ip other keep\n`);
        const before = nftCli(ns, ['list', 'ruleset']);
        const r = await addon().nftRun(ns.path, render(captureTx('tproxy')), false, false, { ifAbsent: IF_ABSENT });
        assert.equal(r.applied, false, present);
        assert.equal(r.output, '');
        assert.equal(nftCli(ns, ['list', 'ruleset']), before, `${present}: the netns changed`);
        assert.deepEqual(parseListing(r.listing ?? ''), cliState(ns), present);
        assert.deepEqual(parseListing(r.listing ?? ''), [
          { family, table, chains: ['stale'] },
          { family: 'ip', table: 'other', chains: ['keep'] },
        ]);
      } finally {
        ns.remove();
      }
    }
  });

  test('check mode on a fresh netns: validated, nothing committed', async () => {
    const ns = makeNetns();
    try {
      const r = await addon().nftRun(ns.path, render(captureTx('tproxy')), true, false, { ifAbsent: IF_ABSENT });
      assert.equal(r.applied, true);
      assert.equal(nftCli(ns, ['list', 'ruleset']), '');
    } finally {
      ns.remove();
    }
  });

  test('a failing script is an nft error of the apply, with nothing applied', async () => {
    const ns = makeNetns();
    try {
      const bad = 'add table inet istio-proxy-nat\nadd chain inet istio-proxy-nat c\nadd rule inet istio-proxy-nat nowhere counter\n';
      await assert.rejects(
        addon().nftRun(ns.path, bad, false, false, { ifAbsent: IF_ABSENT }),
        (e: Error & { code?: string; nftStage?: string; nftError?: string }) => {
          assert.equal(e.code, 'ENFT');
          assert.equal(e.nftStage, 'apply');
          assert.match(e.nftError ?? '', /^<script>:3:/m);
          return true;
        },
      );
      assert.equal(nftCli(ns, ['list', 'ruleset']), '');
    } finally {
      ns.remove();
    }
  });

  test('bad options are a TypeError naming the option; the four-argument call is unchanged', async () => {
    const ns = makeNetns();
    try {
      const native = addon() as unknown as { nftRun(...a: unknown[]): Promise<unknown> };
      assert.throws(() => native.nftRun(ns.path, '', false, false, ['inet x']), TypeError);
      assert.throws(() => native.nftRun(ns.path, '', false, false, { ifAbsent: 'inet x' }), TypeError);
      assert.throws(() => native.nftRun(ns.path, '', false, false, { ifAbsent: ['inet'] }), /ifAbsent\[0\] must be "family name"/);
      assert.throws(() => native.nftRun(ns.path, '', false, false, { ifAbsent: ['inet x', 7] }), /ifAbsent\[1\]/);
      const r = await addon().nftRun(ns.path, 'add table inet x\n', false, false);
      assert.equal(r.applied, true);
      assert.match(nftCli(ns, ['list', 'tables']), /^table inet x$/m);
    } finally {
      ns.remove();
    }
  });

  test('under a queue of concurrent jobs: each fresh netns applied once, each taken one untouched', async () => {
    const N = 30;
    const fresh = Array.from({ length: N }, () => makeNetns());
    const taken = Array.from({ length: N }, () => makeNetns());
    try {
      const mine = (i: number) => render(captureTx(i % 2 === 0 ? 'tproxy' : 'empty'));
      for (const [i, ns] of taken.entries()) nftCli(ns, ['-f', '-'], `add table inet istio-proxy-nat\nadd chain inet istio-proxy-nat c${i}\n`);
      const fds = openFdCount();
      const native = addon();
      const ops: Promise<void>[] = [];
      for (let i = 0; i < N; i++) {
        // Two conditional jobs queued for one fresh netns: the first applies, the second finds its tables.
        ops.push(native.nftRun(fresh[i].path, mine(i), false, false, { ifAbsent: IF_ABSENT }).then((r) => assert.equal(r.applied, true, `fresh ${i}`)));
        ops.push(
          native.nftRun(fresh[i].path, mine(i), false, false, { ifAbsent: IF_ABSENT }).then((r) => {
            assert.equal(r.applied, false, `fresh ${i}, second job`);
            assert.ok(parseListing(r.listing ?? '').some((t) => t.table === 'istio-proxy-nat'));
          }),
        );
        ops.push(
          native.nftRun(taken[i].path, mine(i), false, false, { ifAbsent: IF_ABSENT }).then((r) => {
            assert.equal(r.applied, false, `taken ${i}`);
            assert.deepEqual(parseListing(r.listing ?? ''), [{ family: 'inet', table: 'istio-proxy-nat', chains: [`c${i}`] }]);
          }),
        );
        // Unconditional jobs (a re-apply with deletes, a JSON listing) interleaved.
        ops.push(
          native.nftRun(taken[i].path, `add table ip icts-side\ndelete table ip icts-side\nadd table ip icts-side\n`, false, false).then(() => undefined),
        );
        ops.push(native.nftRun(fresh[i].path, 'list ruleset', false, true).then((r) => assert.ok(Array.isArray(JSON.parse(r.output).nftables))));
      }
      await Promise.all(ops);
      for (let i = 0; i < N; i++) {
        assert.equal(normalise(nftCli(fresh[i], ['list', 'ruleset'])), normalise(cliRuleset(mine(i))), `fresh ${i}`);
        assert.doesNotMatch(nftCli(taken[i], ['list', 'table', 'inet', 'istio-proxy-nat']), /rule|hook/, `taken ${i} changed`);
      }
      assert.equal(openFdCount(), fds, 'open descriptors before and after');
    } finally {
      [...fresh, ...taken].forEach((ns) => ns.remove());
    }
  });
});
