// The addon's safety promises: clear errors for a missing or vanished netns, the process' and
// every thread's netns unchanged whatever happens, concurrent applies that do not interfere,
// and no descriptor or thread left behind.
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { NetnsError, NftError, applyNft, applyTransaction, currentNetnsId, deleteTables, listRulesetJson, withNetnsSync } from '../../../src/netns/nft';
import {
  Netns,
  captureCaseNames,
  captureTx,
  expectedShape,
  makeNetns,
  openFdCount,
  removeAllNetns,
  requireRootAndTools,
  shapeOfJson,
  taskCountSettled,
  threadNetns,
  vanishNetns,
} from './addon-support';

const OWN_NETNS = fs.readlinkSync('/proc/self/ns/net');
const SIDECAR = [
  { family: 'inet', table: 'istio-proxy-nat' },
  { family: 'inet', table: 'istio-proxy-mangle' },
  { family: 'inet', table: 'istio-proxy-raw' },
] as const;

before(() => requireRootAndTools('ss', 'umount', 'mkfifo'));
after(() => removeAllNetns());

/** "net:[4026532176]" for a netns file: its inode is the namespace's id. */
function idOf(path: string): string {
  return `net:[${fs.statSync(path).ino}]`;
}

function assertAllThreadsHome(): void {
  const now = threadNetns();
  assert.equal(now.process, OWN_NETNS, 'the process changed netns');
  for (const [tid, ns] of now.threads) assert.equal(ns, OWN_NETNS, `thread ${tid} is in ${ns}`);
}

function rejectsWith(code: string, pattern: RegExp) {
  return (e: NftError) => {
    assert.ok(e instanceof NftError, String(e));
    assert.equal(e.code, code);
    assert.match(e.message, pattern);
    return true;
  };
}

describe('a missing or wrong netns path', () => {
  const missing = `/run/netns/icts-addon-${process.pid}-never-created`;

  test('every nft function rejects with a clear error naming the path', async () => {
    const clear = rejectsWith('ENOENT', new RegExp(`network namespace ${missing} does not exist`));
    await assert.rejects(applyNft(missing, 'list ruleset'), clear);
    await assert.rejects(applyTransaction(missing, captureTx('empty')), clear);
    await assert.rejects(applyTransaction(missing, captureTx('empty'), { check: true }), clear);
    await assert.rejects(listRulesetJson(missing), clear);
    await assert.rejects(deleteTables(missing, [...SIDECAR]), clear);
    assertAllThreadsHome();
  });

  test('withNetnsSync throws before calling fn', () => {
    let called = false;
    assert.throws(
      () => withNetnsSync(missing, () => (called = true)),
      (e: NetnsError) => e instanceof NetnsError && e.code === 'ENOENT' && e.message.includes(missing),
    );
    assert.equal(called, false);
    assert.equal(currentNetnsId(), OWN_NETNS);
  });

  test('a file that is not a network namespace', async () => {
    await assert.rejects(listRulesetJson('/etc/hostname'), rejectsWith('EINVAL', /\/etc\/hostname is not a network namespace/));
    await assert.rejects(
      applyNft('/proc/self/ns/mnt', 'list ruleset'),
      rejectsWith('EINVAL', /\/proc\/self\/ns\/mnt is a namespace, but not a network namespace/),
    );
    assert.throws(() => withNetnsSync('/etc/hostname', () => 1), NetnsError);
    assertAllThreadsHome();
  });
});

describe('a FIFO at the netns path', () => {
  // In a child with a deadline: if an open blocked the JS thread, this test would otherwise hang
  // instead of failing.
  test('every opener refuses it at once with a clear error; the JS thread is never blocked', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'icts-fifo-'));
    const fifo = path.join(dir, 'netns');
    try {
      execFileSync('mkfifo', [fifo]);
      const dist = path.resolve(__dirname, '..', '..', '..');
      const child = `
        const { applyNft, withNetnsSync } = require(${JSON.stringify(path.join(dist, 'src/netns/nft.js'))});
        const { NetnsHandle } = require(${JSON.stringify(path.join(dist, 'src/netns/handle.js'))});
        const seen = {};
        const note = (k, e) => (seen[k] = { code: e.code, message: e.message });
        try { withNetnsSync(process.argv[1], () => 0); seen.sync = 'entered'; } catch (e) { note('sync', e); }
        try { NetnsHandle.open(process.argv[1]); seen.handle = 'opened'; } catch (e) { note('handle', e); }
        applyNft(process.argv[1], 'list ruleset').then(
          () => (seen.nft = 'ran'),
          (e) => note('nft', e),
        ).then(() => process.stdout.write(JSON.stringify(seen)));
      `;
      const r = spawnSync(process.execPath, ['-e', child, fifo], { encoding: 'utf8', timeout: 20_000 });
      assert.equal(r.signal, null, `the child was blocked and killed (${r.signal}): ${r.stderr}`);
      assert.equal(r.status, 0, r.stderr);
      const seen = JSON.parse(r.stdout);
      const fifoError = { code: 'EINVAL', message: `${fifo} is not a network namespace (it is a FIFO)` };
      assert.deepEqual(seen.sync, fifoError);
      assert.deepEqual(seen.nft, fifoError);
      assert.equal(seen.handle.code, 'EINVAL');
      assert.match(seen.handle.message, /is not a network namespace/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('a netns that vanishes', () => {
  test('deleted (umount + rm) in the middle of a sequence of applies', async () => {
    const ns = makeNetns();
    const names = captureCaseNames().filter((n) => !n.includes('owner-groups'));
    const results: string[] = [];
    for (let i = 0; i < 10; i++) {
      if (i === 5) vanishNetns(ns);
      try {
        await applyTransaction(ns.path, captureTx(names[i]));
        results.push('ok');
      } catch (e) {
        assert.ok(e instanceof NftError);
        assert.equal(e.code, 'ENOENT');
        assert.match(e.message, new RegExp(`network namespace ${ns.path} does not exist \\(no such file: was the netns deleted\\?\\)`));
        results.push('gone');
      }
    }
    assert.deepEqual(results, ['ok', 'ok', 'ok', 'ok', 'ok', 'gone', 'gone', 'gone', 'gone', 'gone']);
    assert.throws(
      () => withNetnsSync(ns.path, () => 0),
      (e: NetnsError) => e.code === 'ENOENT',
    );
    assertAllThreadsHome();
  });

  test('unmounted but its file left behind', async () => {
    const ns = makeNetns();
    await applyTransaction(ns.path, captureTx('empty'));
    vanishNetns(ns, { unlink: false });
    try {
      await assert.rejects(
        applyTransaction(ns.path, captureTx('tproxy')),
        rejectsWith('EINVAL', /is not a network namespace \(not an nsfs file; its bind mount may have been removed\)/),
      );
      assert.throws(
        () => withNetnsSync(ns.path, () => 0),
        (e: NetnsError) => e.code === 'EINVAL',
      );
    } finally {
      fs.rmSync(ns.path);
      ns.remove();
    }
  });

  test('removed while a call is under way: that call completes, the next is refused', async () => {
    const ns = makeNetns();
    const pending = applyTransaction(ns.path, captureTx('tproxy'));
    vanishNetns(ns); // the call already holds the namespace open
    await pending;
    await assert.rejects(listRulesetJson(ns.path), rejectsWith('ENOENT', /does not exist/));
    assertAllThreadsHome();
  });
});

describe('withNetnsSync', () => {
  let a: Netns;
  let b: Netns;
  before(() => {
    a = makeNetns();
    b = makeNetns();
  });
  after(() => {
    a.remove();
    b.remove();
  });

  test('runs fn inside the netns and returns its value', () => {
    const inside = withNetnsSync(a.path, () => currentNetnsId());
    assert.equal(inside, idOf(a.path));
    assert.notEqual(inside, OWN_NETNS);
    assert.equal(currentNetnsId(), OWN_NETNS);
  });

  test("rethrows fn's own error, after switching back", () => {
    const boom = new Error('boom');
    let seen = '';
    assert.throws(
      () =>
        withNetnsSync(a.path, () => {
          seen = currentNetnsId();
          throw boom;
        }),
      (e) => e === boom,
    );
    assert.equal(seen, idOf(a.path));
    assert.equal(currentNetnsId(), OWN_NETNS);
  });

  test('nests: the inner call returns to the outer netns', () => {
    const seen = withNetnsSync(a.path, () => {
      const inner = withNetnsSync(b.path, () => currentNetnsId());
      return [inner, currentNetnsId()];
    });
    assert.deepEqual(seen, [idOf(b.path), idOf(a.path)]);
    assert.equal(currentNetnsId(), OWN_NETNS);
  });

  test('a socket created inside stays in that netns', async () => {
    const server = net.createServer();
    // listen(port) without a host binds synchronously, so the socket is made inside.
    withNetnsSync(a.path, () => server.listen(0));
    await new Promise((r) => server.once('listening', r));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const inA = execFileSync('ip', ['netns', 'exec', a.name, 'ss', '-Hltn', `sport = :${port}`], { encoding: 'utf8' });
      assert.match(inA, new RegExp(`:${port}\\b`));
      const here = execFileSync('ss', ['-Hltn', `sport = :${port}`], { encoding: 'utf8' });
      assert.equal(here.trim(), '');
    } finally {
      server.close();
    }
    assert.equal(currentNetnsId(), OWN_NETNS);
  });
});

describe('many calls, concurrency, no leaks', () => {
  const N = 8;
  let pool: Netns[] = [];
  before(() => {
    pool = Array.from({ length: N }, () => makeNetns());
  });
  after(() => pool.forEach((ns) => ns.remove()));

  test('concurrent applies on different namespaces each land whole', async () => {
    const names = captureCaseNames().filter((n) => !n.includes('owner-groups'));
    for (let round = 0; round < 3; round++) {
      const chosen = pool.map((_, i) => names[(i * 3 + round * 5) % names.length]);
      await Promise.all(pool.map((ns, i) => applyTransaction(ns.path, captureTx(chosen[i]), { replace: [...SIDECAR] })));
      const listed = await Promise.all(pool.map((ns) => listRulesetJson(ns.path)));
      listed.forEach((json, i) => assert.deepEqual(shapeOfJson(json), expectedShape(captureTx(chosen[i])), chosen[i]));
    }
    assertAllThreadsHome();
  });

  test('the process and every thread stay in their netns after many calls and failures; no fd or thread leaks', async () => {
    const round = async () => {
      const ops: Promise<unknown>[] = [];
      for (const [i, ns] of pool.entries()) {
        ops.push(applyTransaction(ns.path, captureTx(i % 2 ? 'tproxy' : 'empty'), { replace: [...SIDECAR] }));
        ops.push(applyTransaction(ns.path, captureTx('ipv6-uid-gid'), { check: true }));
        ops.push(applyNft(ns.path, 'add rule inet nowhere c counter\n').catch((e) => assert.ok(e instanceof NftError)));
        ops.push(applyNft(`${ns.path}-missing`, 'list ruleset').catch((e) => assert.ok(e instanceof NftError)));
        ops.push(listRulesetJson(ns.path));
        assert.equal(
          withNetnsSync(ns.path, () => currentNetnsId()),
          idOf(ns.path),
        );
        assert.throws(
          () =>
            withNetnsSync(ns.path, () => {
              throw new Error('x');
            }),
          /x/,
        );
        assert.equal(currentNetnsId(), OWN_NETNS);
      }
      await Promise.all(ops);
    };
    await round(); // warm up: the addon, Node's own lazily made threads and descriptors
    const fds = openFdCount();
    const tasks = await taskCountSettled(0, 200);
    for (let i = 0; i < 10; i++) await round();
    await deleteTables(pool[0].path, [...SIDECAR]);
    assertAllThreadsHome();
    assert.equal(openFdCount(), fds, 'open descriptors before and after');
    assert.equal(await taskCountSettled(tasks), tasks, 'threads before and after');
  });
});
