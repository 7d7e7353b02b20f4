// The apply plan on a real kernel: a fresh netns gets the golden text alone in one nft job (no
// listing job, no delete, no flush of an existing object), a re-apply with another config leaves no stale table or chain, racing
// applies on one netns end in one consistent state, and a netns that vanishes between the
// listing and the apply is a netns fault (CNI code 104) with nothing applied.
import { NftJsonRuleset } from '../../../src/nft/json';
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { SIDECAR_TABLES } from '../../../src/capture/tables';
import { addon } from '../../../src/netns/addon';
import { NftError, applyTransaction, deleteTables, isNetnsFault, listRulesetJson } from '../../../src/netns/nft';
import { render } from '../../../src/nft/transaction';
import { captureTx, expectedShape, makeNetns, nftCli, removeAllNetns, requireRootAndTools, shapeOfJson, vanishNetns } from './addon-support';

before(() => requireRootAndTools('unshare', 'mount'));
after(() => removeAllNetns());

const SIDECAR = SIDECAR_TABLES.map((t) => ({ family: t.family, table: t.name }));
const isEmptyRuleset = (json: NftJsonRuleset) => json.nftables.every((i) => i.metainfo);

const SIDECAR_IF_ABSENT = SIDECAR.map((t) => `${t.family} ${t.table}`);

type Pieces = readonly { table: string; script: string }[];

/** Records every script the addon is handed while fn runs, the tables it was conditional on, and a piecewise job's pieces. */
async function recording<T>(
  fn: () => Promise<T>,
): Promise<{ result: T; scripts: string[]; ifAbsent: (readonly string[] | undefined)[]; ifPresent: (Pieces | undefined)[] }> {
  const native = addon();
  const real = native.nftRun;
  const scripts: string[] = [];
  const ifAbsent: (readonly string[] | undefined)[] = [];
  const ifPresent: (Pieces | undefined)[] = [];
  native.nftRun = (p, script, dry, json, opts) => {
    scripts.push(script);
    ifAbsent.push(opts && 'ifAbsent' in opts ? opts.ifAbsent : undefined);
    ifPresent.push(opts && 'ifPresent' in opts ? opts.ifPresent : undefined);
    return real.call(native, p, script, dry, json, opts);
  };
  try {
    return { result: await fn(), scripts, ifAbsent, ifPresent };
  } finally {
    native.nftRun = real;
  }
}

describe('apply plan on the kernel', () => {
  test('a fresh netns: one nft job, exactly the golden text, conditional on every owned table; no delete, no flush of an existing object', async () => {
    for (const name of ['tproxy', 'empty', 'ipv6-dns-uid-gid']) {
      const ns = makeNetns();
      try {
        const tx = captureTx(name);
        const { scripts, ifAbsent } = await recording(() => applyTransaction(ns.path, tx, { replace: SIDECAR }));
        assert.deepEqual(scripts, [render(tx)], name);
        assert.deepEqual([...new Set(ifAbsent[0])].sort(), [...SIDECAR_IF_ABSENT].sort(), name);
        assert.ok(!scripts[0].includes('delete'), name);
        // Every flush is of a table the same script has just added (the job ran it only with none there).
        const flushed = [...scripts[0].matchAll(/^flush table (.+)$/gm)].map((m) => m[1]);
        for (const t of flushed) assert.ok(scripts[0].indexOf(`add table ${t}\n`) < scripts[0].indexOf(`flush table ${t}\n`));
        assert.deepEqual(shapeOfJson(await listRulesetJson(ns.path)), expectedShape(tx));
      } finally {
        ns.remove();
      }
    }
  });

  test('TPROXY -> REDIRECT (fewer tables, fewer chains) leaves exactly what a fresh apply leaves', async () => {
    const ns = makeNetns();
    const fresh = makeNetns();
    try {
      await applyTransaction(ns.path, captureTx('tproxy'), { replace: SIDECAR });
      const next = captureTx('empty');
      const { result: sent, scripts } = await recording(() => applyTransaction(ns.path, next, { replace: SIDECAR }));
      // The conditional job found the tables and answered with their listing; the plan made
      // from it is the second and last job.
      assert.deepEqual(scripts, [render(next), render(sent)]);
      const text = render(sent);
      assert.match(text, /^delete table inet istio-proxy-mangle$/m);
      assert.match(text, /^delete table inet istio-proxy-raw$/m);
      assert.match(text, /^delete chain inet istio-proxy-nat /m);
      await applyTransaction(fresh.path, next, { replace: SIDECAR });
      assert.deepEqual(shapeOfJson(await listRulesetJson(ns.path)), expectedShape(next));
      assert.equal(nftCli(ns, ['list', 'ruleset']), nftCli(fresh, ['list', 'ruleset']));
    } finally {
      ns.remove();
      fresh.remove();
    }
  });

  test('racing applies of different configs on one netns end in one of them, whole', async () => {
    const ns = makeNetns();
    try {
      const names = ['tproxy', 'empty', 'ipv6-uid-gid', 'dns-uid-gid', 'inbound-ports-tproxy'];
      for (let round = 0; round < 4; round++) {
        const order = names.map((_, i) => names[(i + round) % names.length]);
        await Promise.all(order.map((n) => applyTransaction(ns.path, captureTx(n), { replace: SIDECAR })));
        const last = order[order.length - 1];
        assert.deepEqual(shapeOfJson(await listRulesetJson(ns.path)), expectedShape(captureTx(last)), `round ${round}`);
      }
      // Racing with another process changing the same netns between our listing and our apply:
      // its transaction lands first, ours is re-planned from a new listing and still ends whole.
      await applyTransaction(ns.path, captureTx('tproxy'), { replace: SIDECAR });
      const native = addon();
      const real = native.nftRun;
      let injected = false;
      native.nftRun = async (p, script, dry, json, opts) => {
        const r = await real.call(native, p, script, dry, json, opts);
        if (!injected && !r.applied) {
          injected = true;
          nftCli(ns, ['delete', 'table', 'inet', 'istio-proxy-raw']); // what a concurrent DEL would do
        }
        return r;
      };
      try {
        await applyTransaction(ns.path, captureTx('empty'), { replace: SIDECAR });
      } finally {
        native.nftRun = real;
      }
      assert.ok(injected);
      assert.deepEqual(shapeOfJson(await listRulesetJson(ns.path)), expectedShape(captureTx('empty')));
    } finally {
      ns.remove();
    }
  });

  test('a netns removed between the listing and the apply: the apply lands whole in the namespace it listed', async () => {
    // The netns is opened once per apply: its path going away (as `ip netns del` does) cannot
    // send the apply elsewhere or half-apply it; the namespace dies with the last reference.
    // A re-apply (REDIRECT onto TPROXY), so that there is a listing job and an apply job.
    const ns = makeNetns();
    await applyTransaction(ns.path, captureTx('empty'), { replace: SIDECAR });
    const native = addon();
    const real = native.nftRun;
    const seen: boolean[] = [];
    native.nftRun = async (p, script, dry, json, opts) => {
      const r = await real.call(native, p, script, dry, json, opts);
      seen.push(r.applied);
      if (!r.applied) vanishNetns(ns);
      else {
        // Read back through the same descriptor: the whole transaction is there.
        const doc = JSON.parse((await real.call(native, p, 'list ruleset', false, true)).output);
        assert.deepEqual(shapeOfJson(doc), expectedShape(captureTx('tproxy')));
      }
      return r;
    };
    try {
      await applyTransaction(ns.path, captureTx('tproxy'), { replace: SIDECAR });
    } finally {
      native.nftRun = real;
    }
    assert.deepEqual(seen, [false, true]);
    // The next request finds nothing: a netns fault (the plugin's code 104), nothing sent.
    await assert.rejects(applyTransaction(ns.path, captureTx('tproxy'), { replace: SIDECAR }), (e) => {
      assert.ok(e instanceof NftError, String(e));
      assert.equal(e.code, 'ENOENT');
      assert.ok(isNetnsFault(e));
      return true;
    });
  });

  test('a listing that fails (not a netns) is a netns fault', async () => {
    await assert.rejects(applyTransaction('/etc/hostname', captureTx('empty')), (e) => {
      assert.ok(isNetnsFault(e), String(e));
      return true;
    });
  });

  test('removal is one job that deletes only what is there: nothing there runs nothing', async () => {
    const ns = makeNetns();
    // One piece per owned table, in order, each planRemove's text for that table.
    const pieces = SIDECAR.map((t) => ({ table: `${t.family} ${t.table}`, script: `delete table ${t.family} ${t.table}\n` }));
    try {
      let r = await recording(() => deleteTables(ns.path, SIDECAR));
      assert.deepEqual(r.scripts, [''], 'one job, its script made of the pieces in the addon');
      assert.deepEqual(r.ifPresent, [pieces]);
      assert.deepEqual(r.result, [], 'nothing there: nothing ran');
      await applyTransaction(ns.path, captureTx('empty'), { replace: SIDECAR });
      const before = await listRulesetJson(ns.path);
      assert.ok(!isEmptyRuleset(before));
      r = await recording(() => deleteTables(ns.path, SIDECAR));
      assert.deepEqual(r.scripts, ['']);
      assert.equal(render(r.result), 'delete table inet istio-proxy-nat\n', 'only the table that was there');
      assert.ok(isEmptyRuleset(await listRulesetJson(ns.path)));
    } finally {
      ns.remove();
    }
  });

  test('a piecewise job runs the pieces of the tables that exist as one transaction: one failing piece leaves every table', async () => {
    const ns = makeNetns();
    try {
      nftCli(ns, ['-f', '-'], 'add table inet icts-a\nadd table ip icts-b\n');
      const job = addon().nftRun(ns.path, '', false, false, {
        ifPresent: [
          { table: 'inet icts-a', script: 'delete table inet icts-a\n' },
          { table: 'inet icts-absent', script: 'this is not nft\n' },
          { table: 'ip icts-b', script: 'delete chain ip icts-b no-such-chain\n' },
        ],
      });
      await assert.rejects(job, (e: Error & { code?: string }) => {
        assert.equal(e.code, 'ENFT', String(e));
        assert.match(e.message, /no-such-chain/, 'the failing piece is named');
        assert.doesNotMatch(e.message, /this is not nft/, 'the piece of an absent table was not sent');
        return true;
      });
      const tables = nftCli(ns, ['list', 'tables']);
      assert.match(tables, /table inet icts-a/, 'nothing applied: the first piece went back with the failing one');
      assert.match(tables, /table ip icts-b/);
      const ok = await addon().nftRun(ns.path, '', false, false, {
        ifPresent: [
          { table: 'ip icts-b', script: 'delete table ip icts-b\n' },
          { table: 'inet icts-absent', script: 'this is not nft\n' },
          { table: 'inet icts-a', script: 'delete table inet icts-a\n' },
        ],
      });
      assert.deepEqual([ok.applied, ok.ran], [true, ['ip icts-b', 'inet icts-a']], 'the pieces that ran, in the given order');
      assert.equal(nftCli(ns, ['list', 'tables']), '');
    } finally {
      ns.remove();
    }
  });
});
