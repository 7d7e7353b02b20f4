// nftRun's inline run (opts.inline, native/nft_run.cc): a listing or a conditional job runs on
// the JS thread when the addon is idle and a low descriptor is free, and is queued otherwise.
// Either way the result is the same; the JS thread is back in its own netns afterwards.
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { SIDECAR_TABLES } from '../../../src/capture/tables';
import { addon } from '../../../src/netns/addon';
import { currentNetnsId } from '../../../src/netns/nft';
import { render } from '../../../src/nft/transaction';
import { captureTx, makeNetns, nftCli, openFdCount, removeAllNetns, requireRootAndTools, threadNetns } from './addon-support';

before(() => requireRootAndTools());
after(() => removeAllNetns());

const IF_ABSENT = SIDECAR_TABLES.map((t) => `${t.family} ${t.name}`);
const OWN_NETNS = currentNetnsId();

function assertAllThreadsHome(): void {
  const now = threadNetns();
  assert.equal(now.process, OWN_NETNS);
  for (const [tid, ns] of now.threads) assert.equal(ns, OWN_NETNS, `thread ${tid} is in ${ns}`);
}

describe('nftRun with opts.inline', () => {
  test('idle: a conditional apply runs on the JS thread, applies what the CLI would, and leaves the thread at home', async () => {
    const script = render(captureTx('tproxy'));
    const ns = makeNetns();
    const ref = makeNetns();
    try {
      const fds = openFdCount();
      const r = await addon().nftRun(ns.path, script, false, false, { ifAbsent: IF_ABSENT, inline: true });
      assert.equal(r.onJsThread, true);
      assert.equal(r.applied, true);
      assertAllThreadsHome();
      assert.equal(openFdCount(), fds, 'no descriptor left');
      nftCli(ref, ['-f', '-'], script);
      assert.equal(nftCli(ns, ['list', 'ruleset']), nftCli(ref, ['list', 'ruleset']));
      // Tables there now: the same job answers with the listing, inline too, and changes nothing.
      const again = await addon().nftRun(ns.path, script, false, false, { ifAbsent: IF_ABSENT, inline: true });
      assert.deepEqual([again.onJsThread, again.applied], [true, false]);
      assert.match(again.listing ?? '', /istio-proxy-nat/);
    } finally {
      ns.remove();
      ref.remove();
    }
  });

  test('nft refusing the script inline: rejected with its diagnostics, nothing applied, the thread at home', async () => {
    const ns = makeNetns();
    try {
      await assert.rejects(
        addon().nftRun(ns.path, 'add table inet x\nadd chain inet x c { type nat hook nowhere priority 0; }\n', false, false, {
          ifAbsent: IF_ABSENT,
          inline: true,
        }),
        (e: Error & { code?: string }) => {
          assert.equal(e.code, 'ENFT');
          assert.match(e.message, /<script>:2:/);
          return true;
        },
      );
      assertAllThreadsHome();
      assert.equal(nftCli(ns, ['list', 'tables']), '');
    } finally {
      ns.remove();
    }
  });

  test('with a job queued, an inline request waits its turn through the queue, in order', async () => {
    const nss = [makeNetns(), makeNetns()];
    try {
      const first = addon().nftRun(nss[0].path, 'add table inet icts-first\n', false, false);
      const second = addon().nftRun(nss[1].path, render(captureTx('empty')), false, false, { ifAbsent: IF_ABSENT, inline: true });
      const [a, b] = await Promise.all([first, second]);
      assert.equal(a.onJsThread, false);
      assert.equal(b.onJsThread, false, 'not on the JS thread while the dispatcher had a job');
      assert.equal(b.applied, true);
      assert.match(nftCli(nss[1], ['list', 'tables']), /istio-proxy-nat/);
      assertAllThreadsHome();
    } finally {
      for (const ns of nss) ns.remove();
    }
  });

  test('no free descriptor below 1000: queued to a job thread (its own low fds), applied all the same', async () => {
    const ns = makeNetns();
    const held: number[] = [];
    try {
      // Fill the table until the lowest free descriptor is at least 1000.
      for (;;) {
        const fd = fs.openSync('/dev/null', 'r');
        held.push(fd);
        if (fd >= 1000) break;
      }
      const r = await addon().nftRun(ns.path, render(captureTx('empty')), false, false, { ifAbsent: IF_ABSENT, inline: true });
      assert.equal(r.onJsThread, false);
      assert.equal(r.applied, true);
      assert.match(nftCli(ns, ['list', 'tables']), /istio-proxy-nat/);
    } finally {
      for (const fd of held) fs.closeSync(fd);
      ns.remove();
    }
  });

  test('a piecewise job (removals) is never inline', () => {
    assert.throws(
      () => addon().nftRun('/proc/self/ns/net', '', false, false, { ifPresent: [], inline: true } as never),
      /opts\.inline is not for a piecewise job/,
    );
  });
});
