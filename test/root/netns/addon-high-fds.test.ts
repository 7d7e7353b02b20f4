// libnftables 1.0.6 waits on its netlink socket with select(), and glibc aborts the process for
// an fd of FD_SETSIZE (1024) or more. A child process holding 5,000 fds (so every new fd is
// numbered above 5,000) applies rules through the addon: it must survive, the rules must land,
// and 1,000 apply/remove pairs must leave no fd behind and every thread in its own netns. The
// addon before its private fd table died here with SIGABRT ("bit out of range 0 - FD_SETSIZE").
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { makeNetns, nftCli, removeAllNetns, requireRootAndTools } from './addon-support';

before(() => requireRootAndTools('prlimit'));
after(() => removeAllNetns());

const CHILD = path.join(__dirname, 'addon-high-fds-child.js');
const PAIRS = 1000;

describe("nftRun with the process' fds above FD_SETSIZE", () => {
  test('rules applied into a fresh netns, the process alive, 1,000 apply/remove pairs leak nothing', () => {
    const ns = makeNetns();
    try {
      // A soft and hard limit of 8192, whatever this shell has: room for the 5,000.
      const r = spawnSync('prlimit', ['--nofile=8192:8192', process.execPath, CHILD, ns.path, String(PAIRS)], {
        encoding: 'utf8',
        timeout: 300_000,
      });
      assert.equal(r.signal, null, `child killed by ${r.signal}: ${r.stderr}`);
      assert.equal(r.status, 0, r.stderr);
      const out = JSON.parse(r.stdout);
      assert.ok(out.probeFd > 5000, `fds opened by the child are above 5,000 (got ${out.probeFd})`);
      // The first apply's one rule, read back through the addon.
      assert.deepEqual(out.firstRules, [
        [{ match: { op: '==', left: { payload: { protocol: 'tcp', field: 'dport' } }, right: 4242 } }, { counter: { packets: 0, bytes: 0 } }],
      ]);
      assert.equal(out.fdsAfter, out.fdsBefore, 'open descriptors before and after the pairs');
      assert.equal(out.home, true, "every thread back in the process' netns");
      assert.equal(out.tablesLeft, 0);
      // And the kernel agrees: the last pair removed the table.
      assert.equal(nftCli(ns, ['list', 'tables']).trim(), '');
    } finally {
      ns.remove();
    }
  });
});
