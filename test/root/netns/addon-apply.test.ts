// The native addon applies transactions for real: what lands in the kernel is the transaction,
// re-applies replace tables whole, check mode accepts every capture golden, and a failed apply
// leaves the namespace as it was with nft's diagnostics in the error.
import { NftJsonRuleset } from '../../../src/nft/json';
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SIDECAR_TABLES } from '../../../src/capture/tables';
import { render } from '../../../src/nft/transaction';
import { NftError, applyNft, applyTransaction, deleteTables, listNftState, listRulesetJson } from '../../../src/netns/nft';
import { planReplace } from '../../../src/nft/plan';
import { Netns, captureCaseNames, captureTx, expectedShape, groupNamesIn, makeNetns, nftCli, removeAllNetns, shapeOfJson } from './addon-support';
import { requireRootAndTools } from './addon-support';
import { tempDir } from '../../support/tmp';

before(() => requireRootAndTools('unshare', 'mount'));
after(() => removeAllNetns());

const EQUALITY_CASES = [
  'inbound-ports-empty-tproxy',
  'tproxy',
  'empty',
  'dns-uid-gid',
  'ipv6-dns-uid-gid',
  'ipnets-with-kube-virt-interfaces',
  'drop-invalid',
  'loopback-outbound-iprange',
];

const isEmptyRuleset = (json: NftJsonRuleset) => json.nftables.every((i) => i.metainfo);

/** `nft list ruleset` text with each table's chain blocks sorted by name. */
function chainsByName(text: string): string {
  return text.replace(
    /(table \S+ \S+ \{\n)([\s\S]*?)(\n\}\n)/g,
    (_, head: string, body: string, tail: string) => head + body.split('\n\n').sort().join('\n\n') + tail,
  );
}

describe('applied ruleset equals the transaction', () => {
  for (const name of EQUALITY_CASES) {
    test(`capture/${name}`, async () => {
      const tx = captureTx(name);
      const viaAddon = makeNetns();
      const viaCli = makeNetns();
      const golden = makeNetns();
      try {
        // Check mode first: accepted, and nothing is left behind.
        await applyTransaction(viaAddon.path, tx, { check: true });
        assert.ok(isEmptyRuleset(await listRulesetJson(viaAddon.path)), 'check mode changed the netns');

        // A fresh netns: the plan is the golden text itself (no delete, no flush of an existing object).
        const sent = await applyTransaction(viaAddon.path, tx);
        assert.equal(render(sent), render(tx));
        const addonJson = await listRulesetJson(viaAddon.path);
        // The addon's listing is nft's listing.
        assert.deepEqual(addonJson, JSON.parse(nftCli(viaAddon, ['-j', 'list', 'ruleset'])));
        // Tables, chains with their hooks, and rules per chain are what the transaction builds.
        assert.deepEqual(shapeOfJson(addonJson), expectedShape(tx));
        // Byte for byte (handles too) the same kernel state as the nft CLI running the same
        // check and apply...
        nftCli(viaCli, ['-c', '-f', '-'], render(sent));
        nftCli(viaCli, ['-f', '-'], render(sent));
        assert.deepEqual(addonJson, JSON.parse(nftCli(viaCli, ['-j', 'list', 'ruleset'])));
        // ...and, rule text included, as the CLI applying the golden text (render) itself.
        nftCli(golden, ['-f', '-'], render(tx));
        assert.equal(nftCli(viaAddon, ['list', 'ruleset']), nftCli(golden, ['list', 'ruleset']));
      } finally {
        viaAddon.remove();
        viaCli.remove();
        golden.remove();
      }
    });
  }

  test('the plan into a fresh netns is the golden text itself', () => {
    const sidecar = SIDECAR_TABLES.map((t) => ({ family: t.family, table: t.name }));
    for (const name of captureCaseNames()) {
      const tx = captureTx(name);
      assert.equal(render(planReplace(tx, sidecar, [])), render(tx), name);
    }
  });
});

describe('re-apply replaces tables whole', () => {
  let ns: Netns;
  let fresh: Netns;
  before(() => {
    ns = makeNetns();
    fresh = makeNetns();
  });
  after(() => {
    ns.remove();
    fresh.remove();
  });

  // Pairs that touch the same tables: the second must leave exactly what a fresh apply leaves.
  const pairs: [string, string][] = [
    ['inbound-ports-tproxy', 'inbound-ports-empty-tproxy'],
    ['ipv6-uid-gid', 'empty'],
    ['dns-uid-gid', 'ip-range'],
    ['empty', 'ipv6-uid-gid'],
  ];
  for (const [first, second] of pairs) {
    test(`${first} then ${second}: no stale chain or rule`, async () => {
      nftCli(ns, ['flush', 'ruleset']);
      nftCli(fresh, ['flush', 'ruleset']);
      await applyTransaction(ns.path, captureTx(first));
      await applyTransaction(ns.path, captureTx(second));
      await applyTransaction(fresh.path, captureTx(second));
      assert.deepEqual(shapeOfJson(await listRulesetJson(ns.path)), expectedShape(captureTx(second)));
      // Rule text too. Chains kept across the re-apply keep their place in the listing, so
      // chains are compared in name order.
      assert.equal(chainsByName(nftCli(ns, ['list', 'ruleset'])), chainsByName(nftCli(fresh, ['list', 'ruleset'])));
    });
  }

  test('applying the same transaction twice changes nothing', async () => {
    const tx = captureTx('tproxy');
    await applyTransaction(ns.path, tx);
    const once = nftCli(ns, ['list', 'ruleset']);
    await applyTransaction(ns.path, tx);
    assert.equal(nftCli(ns, ['list', 'ruleset']), once);
    assert.deepEqual(shapeOfJson(await listRulesetJson(ns.path)), expectedShape(tx));
  });

  test('tables the new transaction does not touch: kept by default, removed when listed in replace', async () => {
    const sidecar = SIDECAR_TABLES.map((t) => ({ family: t.family, table: t.name }));
    const tproxy = captureTx('tproxy'); // nat, mangle, raw
    const redirect = captureTx('empty'); // nat only
    await applyTransaction(ns.path, tproxy);
    await applyTransaction(ns.path, redirect);
    const kept = shapeOfJson(await listRulesetJson(ns.path)).filter((l) => l.startsWith('table'));
    assert.deepEqual(kept, ['table inet istio-proxy-mangle', 'table inet istio-proxy-nat', 'table inet istio-proxy-raw']);

    await applyTransaction(ns.path, tproxy);
    await applyTransaction(ns.path, redirect, { replace: sidecar });
    assert.deepEqual(shapeOfJson(await listRulesetJson(ns.path)), expectedShape(redirect));
  });

  test('a table of someone else survives a re-apply', async () => {
    nftCli(ns, ['add', 'table', 'inet', 'other']);
    nftCli(ns, ['add', 'chain', 'inet', 'other', 'c']);
    await applyTransaction(ns.path, captureTx('tproxy'));
    await applyTransaction(ns.path, captureTx('empty'), {
      replace: SIDECAR_TABLES.map((t) => ({ family: t.family, table: t.name })),
    });
    assert.match(nftCli(ns, ['list', 'table', 'inet', 'other']), /chain c/);
    nftCli(ns, ['delete', 'table', 'inet', 'other']);
  });

  test('deleteTables removes ours, and absent tables are not an error', async () => {
    const sidecar = SIDECAR_TABLES.map((t) => ({ family: t.family, table: t.name }));
    await applyTransaction(ns.path, captureTx('tproxy'));
    await deleteTables(ns.path, sidecar);
    assert.ok(isEmptyRuleset(await listRulesetJson(ns.path)));
    await deleteTables(ns.path, sidecar); // nothing there: still fine
    await deleteTables(ns.path, []);
    assert.ok(isEmptyRuleset(await listRulesetJson(ns.path)));
  });
});

describe('check mode', () => {
  test('every capture transaction is accepted in check mode, and none is applied', () => {
    // Four goldens name groups ("java", "ftp") that nft resolves while parsing; a test host may
    // lack them. The checks run in a child process with a private mount namespace whose
    // /etc/group has every group the goldens name, so this host's /etc/group is untouched.
    // (Slave propagation: netns mounts removed out here disappear in there too.)
    const names = captureCaseNames();
    assert.equal(names.length, 28);
    const groups = new Set(names.flatMap((n) => groupNamesIn(render(captureTx(n)))));
    const dir = tempDir(path.join(os.tmpdir(), 'icts-addon-group-'));
    const groupFile = path.join(dir, 'group');
    const known = fs.readFileSync('/etc/group', 'utf8');
    let extra = '';
    let gid = 30100;
    for (const g of groups) if (!new RegExp(`^${g}:`, 'm').test(known)) extra += `${g}:x:${gid++}:\n`;
    fs.writeFileSync(groupFile, known + extra);
    const ns = makeNetns();
    try {
      const child = path.join(__dirname, 'addon-check-child.js');
      const script = 'mount --bind "$0" /etc/group && exec "$@"';
      const r = spawnSync('unshare', ['-m', '--propagation', 'slave', 'sh', '-c', script, groupFile, process.execPath, child, ns.path], {
        encoding: 'utf8',
      });
      assert.equal(r.status, 0, `check child failed: ${r.stderr}`);
      const results = r.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { case: string; ok: boolean; error?: string; leftover?: boolean });
      assert.deepEqual(results.map((x) => x.case).sort(), [...names].sort());
      for (const x of results) {
        assert.ok(x.ok, `${x.case} rejected in check mode: ${x.error}`);
        assert.equal(x.leftover, false, `${x.case}: check mode left tables behind`);
      }
    } finally {
      ns.remove();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  // The kernel answers each message of a check-only batch, then aborts it. (Checks it makes only
  // at commit, such as an expression a chain type does not allow, are not seen by nft -c either.)
  test('check mode reports what the kernel refuses, and applies nothing', async () => {
    const ns = makeNetns();
    try {
      const bad = 'add table inet t\nadd chain inet t c\nadd rule inet t c jump nowhere\n';
      await assert.rejects(applyNft(ns.path, bad, { check: true }), (e: NftError) => {
        assert.ok(e instanceof NftError);
        assert.equal(e.code, 'ENFT');
        assert.match(e.stderr, /<script>:3:\d+-\d+: Error: Could not process rule: No such file or directory/);
        assert.ok(e.stderr.includes('\nadd rule inet t c jump nowhere\n'), e.stderr);
        return true;
      });
      assert.ok(isEmptyRuleset(await listRulesetJson(ns.path)));
    } finally {
      ns.remove();
    }
  });
});

describe('a failed apply leaves the netns exactly as it was', () => {
  let ns: Netns;
  before(() => {
    ns = makeNetns();
  });
  after(() => ns.remove());

  // Each breaks at a different stage: the parser, nft's evaluation, the kernel's commit.
  const broken: { why: string; extra: string; line: string; message: RegExp }[] = [
    {
      why: 'syntax error',
      extra: 'add rule inet istio-proxy-nat istio-output tcp dport 80 bogus-token\n',
      line: 'add rule inet istio-proxy-nat istio-output tcp dport 80 bogus-token',
      message: /syntax error/,
    },
    {
      why: 'unknown chain',
      extra: 'add rule inet istio-proxy-nat no-such-chain counter return\n',
      line: 'add rule inet istio-proxy-nat no-such-chain counter return',
      message: /No such file or directory/,
    },
    {
      why: 'kernel refuses a rule (redirect outside a nat chain)',
      extra: 'add chain inet istio-proxy-nat f2 { type filter hook output priority 0 ; }\n' + 'add rule inet istio-proxy-nat f2 tcp dport 2 redirect to :80\n',
      line: 'add rule inet istio-proxy-nat f2 tcp dport 2 redirect to :80',
      message: /Operation not supported/,
    },
  ];

  for (const b of broken) {
    test(b.why, async () => {
      await applyTransaction(ns.path, captureTx('tproxy'));
      const beforeJson = await listRulesetJson(ns.path);
      const beforeText = nftCli(ns, ['list', 'ruleset']);

      // A different config plus one bad line: the deletes and adds before it must not stick.
      const sidecar = SIDECAR_TABLES.map((t) => ({ family: t.family, table: t.name }));
      const script = render(planReplace(captureTx('empty'), sidecar, await listNftState(ns.path))) + b.extra;
      const lineNo = script.split('\n').indexOf(b.line) + 1;
      assert.ok(lineNo > 0);
      await assert.rejects(applyNft(ns.path, script), (e: NftError) => {
        assert.ok(e instanceof NftError, String(e));
        assert.equal(e.code, 'ENFT');
        assert.equal(e.script, script);
        assert.equal(e.netnsPath, ns.path);
        assert.match(e.stderr, b.message);
        assert.match(e.stderr, new RegExp(`<script>:${lineNo}:\\d+-\\d+: Error:`));
        assert.ok(e.stderr.includes(`\n${b.line}\n`), `offending line missing from:\n${e.stderr}`);
        assert.ok(e.message.includes(e.stderr.trim()), 'the message carries nft diagnostics');
        return true;
      });

      assert.deepEqual(await listRulesetJson(ns.path), beforeJson);
      assert.equal(nftCli(ns, ['list', 'ruleset']), beforeText);
    });
  }
});
