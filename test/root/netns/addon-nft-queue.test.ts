// Stress test of nftRun's worker queue (native/nft_run.cc): many applies into many namespaces at
// once from one process, mixed with check-mode runs, failing scripts, JSON listings and rules that
// resolve interface names (libnftables' process-global interface cache). Every namespace must end
// with exactly the ruleset the nft CLI makes from the same script alone, every error must name its
// own namespace and line, and once everything has settled no worker thread may be left.
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { SIDECAR_TABLES } from '../../../src/capture/tables';
import { NftError, applyNft, applyTransaction, deleteTables, listRulesetJson } from '../../../src/netns/nft';
import { deleteTables as deleteTablesOps } from '../../../src/nft/assemble';
import { render } from '../../../src/nft/transaction';
import {
  Netns,
  captureCaseNames,
  captureTx,
  makeNetns,
  nftCli,
  openFdCount,
  removeAllNetns,
  requireRootAndTools,
  taskCountSettled,
  threadNetns,
} from './addon-support';

const NS = 40;
const ROUNDS = 3;
const OWN_NETNS = fs.readlinkSync('/proc/self/ns/net');

before(() => requireRootAndTools());
after(() => removeAllNetns());

/** A table of this namespace's own: a port and a comment only it has, and an interface rule. */
function markerScript(i: number): string {
  return [
    'table inet icts-marker',
    'delete table inet icts-marker',
    'table inet icts-marker {',
    '  chain c {',
    `    tcp dport ${20000 + i} counter comment "ns-${i}"`,
    `    iif "d${i % 5}" udp dport ${30000 + i} accept`,
    '  }',
    '}',
    '',
  ].join('\n');
}

/** `nft list ruleset` without the parts that differ between equal rulesets (handles, counters). */
function normalise(text: string): string {
  return text.replace(/ # handle \d+/g, '').replace(/counter packets \d+ bytes \d+/g, 'counter');
}

describe('nftRun worker queue under load', () => {
  let pool: Netns[] = [];
  let reference: Netns;
  const cases = captureCaseNames().filter((n) => !n.includes('owner-groups'));

  before(() => {
    pool = Array.from({ length: NS }, () => makeNetns());
    reference = makeNetns();
    // Interfaces d0..d4 whose indexes differ from one namespace to the next (a different number
    // of other links made first), so a rule resolved against another namespace's interfaces
    // would show a wrong index or fail.
    for (const [i, ns] of [...pool, reference].entries()) {
      // Bridges: no module beyond what the machine has (no dummy driver here).
      const links = [...Array.from({ length: i % 4 }, (_, k) => `pad${k}`), 'd0', 'd1', 'd2', 'd3', 'd4'];
      const batch = links.map((l) => `link add ${l} type bridge`).join('\n');
      execFileSync('ip', ['-n', ns.name, '-batch', '-'], { input: `${batch}\n` });
    }
  });
  after(() => [...pool, reference].forEach((ns) => ns.remove()));

  test('concurrent applies land whole and equal to the CLI applying each script alone', async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const chosen = pool.map((_, i) => cases[(i * 7 + round * 3) % cases.length]);
      // Whole-replacement scripts (add+delete of each table, then the golden text): every apply
      // changes existing objects, so each pays a grace period and the queue is exercised.
      const scripts = chosen.map((name, i) => render([...deleteTablesOps(SIDECAR_TABLES), ...captureTx(name)]) + markerScript(i));
      const ops: Promise<unknown>[] = [];
      for (const [i, ns] of pool.entries()) {
        ops.push(applyNft(ns.path, scripts[i]));
        // Interleaved with the applies: a check-only run, a script that fails on its third line,
        // and a JSON listing (JSON mode also goes through libnftables' JSON parser first).
        ops.push(applyTransaction(ns.path, captureTx(cases[(i + round) % cases.length]), { check: true }));
        ops.push(
          applyNft(ns.path, `add table inet icts-bad-${i}\nadd chain inet icts-bad-${i} c\nadd rule inet icts-bad-${i} nowhere counter\n`).then(
            () => assert.fail(`bad script ${i} was accepted`),
            (e) => {
              assert.ok(e instanceof NftError, String(e));
              assert.equal(e.netnsPath, ns.path);
              assert.match(e.stderr, /^<script>:3:/m);
              assert.match(e.stderr, new RegExp(`icts-bad-${i} nowhere`));
            },
          ),
        );
        ops.push(listRulesetJson(ns.path).then((json) => assert.ok(Array.isArray(json.nftables))));
      }
      await Promise.all(ops);

      // Each namespace against the CLI applying the same script into the reference namespace.
      const byScript = new Map<string, string>();
      for (const [i, ns] of pool.entries()) {
        let want = byScript.get(scripts[i]);
        if (want === undefined) {
          nftCli(reference, ['flush', 'ruleset']);
          nftCli(reference, ['-f', '-'], scripts[i]);
          want = normalise(nftCli(reference, ['list', 'ruleset']));
          byScript.set(scripts[i], want);
        }
        const got = normalise(nftCli(ns, ['list', 'ruleset']));
        assert.equal(got, want, `netns ${i} (${chosen[i]}), round ${round}`);
        assert.ok(got.includes(`tcp dport ${20000 + i} counter comment "ns-${i}"`), `marker of netns ${i}`);
        assert.ok(!/icts-bad-/.test(got), `netns ${i}: the failed transaction left something behind`);
        // The interface rule names d<i%5> of this namespace: nft prints the name it resolves the
        // stored index to in the same namespace.
        assert.ok(got.includes(`iif "d${i % 5}" udp dport ${30000 + i} accept`), `interface rule of netns ${i}`);
      }
    }
  });

  // A job answers once libnftables has the kernel's acknowledgement, and closes its netlink
  // socket (the kernel's grace-period wait after a delete) only after that, while the next job
  // already runs.
  test('answered before the close: each answer sees its commit, queued re-applies land in order', async () => {
    const marker = (i: number, k: number) =>
      `add table inet icts-order\ndelete table inet icts-order\nadd table inet icts-order\nadd chain inet icts-order c\nadd rule inet icts-order c tcp dport ${40000 + k} counter comment "ns-${i}-k${k}"\n`;
    // One netns, one after the other: the CLI, another process, sees each commit at once.
    for (let k = 0; k < 20; k++) {
      await applyNft(pool[0].path, marker(0, k));
      const listed = nftCli(pool[0], ['list', 'table', 'inet', 'icts-order']);
      assert.match(listed, new RegExp(`tcp dport ${40000 + k} counter .*comment "ns-0-k${k}"`), `re-apply ${k}`);
      assert.equal((listed.match(/dport/g) ?? []).length, 1);
    }
    // Every netns, 8 re-applies each, all queued at once with listings between: each netns ends
    // with its last one, and every listing sees one whole version.
    const fds = openFdCount();
    const ops: Promise<unknown>[] = [];
    for (let k = 0; k < 8; k++) {
      for (const [i, ns] of pool.entries()) {
        ops.push(applyNft(ns.path, marker(i, k)));
        ops.push(
          listRulesetJson(ns.path).then((json) => {
            const rules = json.nftables.filter((o) => o.rule?.table === 'icts-order');
            assert.ok(rules.length <= 1, `netns ${i}: ${rules.length} rules in one version`);
          }),
        );
      }
    }
    await Promise.all(ops);
    for (const [i, ns] of pool.entries()) {
      const listed = nftCli(ns, ['list', 'table', 'inet', 'icts-order']);
      assert.match(listed, new RegExp(`comment "ns-${i}-k7"`), `netns ${i} ends with its last re-apply`);
      assert.equal((listed.match(/dport/g) ?? []).length, 1);
    }
    assert.equal(openFdCount(), fds, 'open descriptors before and after');
    await Promise.all(pool.map((ns) => deleteTables(ns.path, [{ family: 'inet', table: 'icts-order' }])));
  });

  test('once every call has settled, no worker thread is left and every thread is home', async () => {
    const tasksBefore = await taskCountSettled(0, 200);
    await Promise.all(pool.map((ns, i) => applyNft(ns.path, markerScript(i))));
    const now = threadNetns();
    assert.equal(now.process, OWN_NETNS);
    for (const [tid, ns] of now.threads) assert.equal(ns, OWN_NETNS, `thread ${tid} is in ${ns}`);
    // Job threads end a moment after their result is posted (already back in this netns).
    assert.equal(await taskCountSettled(tasksBefore), tasksBefore, 'threads before and after');
  });
});
