// The ZDS server against the ztunnel stand-in (its own protobuf schema): hello, snapshot with
// Add (+ netns fd) and Keep, SnapshotSent, one request at a time with its ack, Adds to the newest
// connection, Dels to all, and the bad cases: garbage or oversized records, a client that never
// acks, one that talks out of turn, many connecting at once. No root needed: the netns fds are
// the test process's own (/proc/self/ns/net).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, afterEach, test } from 'node:test';
import { MemoryLogger } from '../../../src/log/logger';
import { NetnsHandle } from '../../../src/netns/handle';
import { EnrolledPods } from '../../../src/agent/ambient/enrolled-pods';
import { ZdsError, ZtunnelServer } from '../../../src/agent/ambient/ztunnel-server';
import { SeqpacketSocket } from '../../../src/netns/seqpacket';
import { encodeAck, encodeHello, ZtunnelStandIn } from '../../support/ztunnel-standin';
import { tempDir } from '../../support/tmp';
import { until } from '../../support/until';

const dir = tempDir(path.join(os.tmpdir(), 'icts-zds-'));
let n = 0;
const cleanups: (() => void)[] = [];
after(() => fs.rmSync(dir, { recursive: true, force: true }));
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

const ownNetnsIno = fs.statSync('/proc/self/ns/net', { bigint: true }).ino;
const wl = (name: string) => ({ name, namespace: 'shop', serviceAccount: 'default' });
const FAST = { helloMs: 400, writeMs: 400, ackMs: 400, acceptIntervalMs: 0 };

function setup(opts: { timeouts?: Partial<typeof FAST>; pods?: { uid: string; netns: boolean }[] } = {}) {
  const cache = new EnrolledPods();
  for (const p of opts.pods ?? []) {
    cache.ensure(p.uid);
    if (p.netns) cache.upsert(p.uid, wl(`pod-${p.uid}`), NetnsHandle.open('/proc/self/ns/net'));
  }
  const log = new MemoryLogger();
  const counts: number[] = [];
  const server = ZtunnelServer.listen({
    path: path.join(dir, `zds-${n++}.sock`),
    log,
    snapshot: () => cache.snapshot(),
    timeouts: { ...FAST, ...opts.timeouts },
    onConnections: (c) => counts.push(c),
  });
  const standIns: ZtunnelStandIn[] = [];
  const standIn = (o: ConstructorParameters<typeof ZtunnelStandIn>[1] = {}) => {
    const s = new ZtunnelStandIn(server.path, o);
    standIns.push(s);
    return s;
  };
  cleanups.push(() => {
    for (const s of standIns) s.close();
    server.close();
    cache.clear();
  });
  return { cache, log, server, standIn, counts };
}

test('hello, then a snapshot: Add with the netns fd for known netns, Keep for the others, then SnapshotSent', async () => {
  const { server, standIn } = setup({
    pods: [
      { uid: 'uid-a', netns: true },
      { uid: 'uid-b', netns: false },
      { uid: 'uid-c', netns: true },
    ],
  });
  const z = standIn();
  await z.connect();
  await z.waitFor(() => z.snapshots.length === 1, 3000, 'snapshot');
  assert.deepEqual(
    z.received.map((r) => r.kind),
    ['add', 'keep', 'add', 'snapshot_sent'],
  );
  const a = z.received[0];
  assert.ok(a.kind === 'add');
  assert.equal(a.uid, 'uid-a');
  assert.equal(a.name, 'pod-uid-a');
  assert.equal(a.namespace, 'shop');
  assert.equal(a.serviceAccount, 'default');
  assert.equal(a.fdIno, ownNetnsIno, 'the fd that arrived is the pod netns');
  assert.deepEqual(z.snapshots[0], ['uid-a', 'uid-b', 'uid-c']);
  assert.equal(server.connections, 1);
  await until('snapshot acked', () => server.stats.snapshots === 1, 3000);
});

test('Adds go to the newest connection, Dels to every connection; no connection: Add fails, Del succeeds', async () => {
  const { server, standIn, cache } = setup();
  const h = NetnsHandle.open('/proc/self/ns/net');
  cache.upsert('uid-x', wl('x'), h);
  await assert.rejects(server.podAdded('uid-x', wl('x'), h), (e: ZdsError) => e.kind === 'no-connection' && /no ztunnel connection/.test(e.message));
  await server.podDeleted('uid-x');

  const old = standIn();
  await old.connect();
  await old.waitFor(() => old.snapshots.length === 1);
  const fresh = standIn();
  await fresh.connect();
  await fresh.waitFor(() => fresh.snapshots.length === 1);
  await until('two connections', () => server.connections === 2, 3000);

  await server.podAdded('uid-y', wl('y'), h);
  assert.ok(fresh.received.some((r) => r.kind === 'add' && r.uid === 'uid-y'));
  assert.ok(!old.received.some((r) => r.kind === 'add' && r.uid === 'uid-y'));

  await server.podDeleted('uid-y');
  assert.ok(fresh.received.some((r) => r.kind === 'del' && r.uid === 'uid-y'));
  assert.ok(old.received.some((r) => r.kind === 'del' && r.uid === 'uid-y'));

  // The newest goes away: Adds fall back to the older connection.
  fresh.disconnect();
  await until('fallback', () => server.connections === 1, 3000);
  await server.podAdded('uid-z', wl('z'), h);
  assert.ok(old.received.some((r) => r.kind === 'add' && r.uid === 'uid-z'));
});

test('an ack with an error fails that Add only; the connection stays', async () => {
  const { server, standIn } = setup();
  const z = standIn({ ack: (r) => (r.kind === 'add' && r.uid === 'bad' ? 'no such workload' : '') });
  await z.connect();
  await z.waitFor(() => z.snapshots.length === 1);
  const h = NetnsHandle.open('/proc/self/ns/net');
  cleanups.push(() => h.release());
  await assert.rejects(server.podAdded('bad', wl('bad'), h), (e: ZdsError) => e.kind === 'ack' && /no such workload/.test(e.message));
  await server.podAdded('good', wl('good'), h);
  assert.equal(server.connections, 1);
  // A Del's answer is not checked (as upstream): an ack error there is no failure.
  const z2 = standIn({ ack: (r) => (r.kind === 'del' ? 'unknown workload' : '') });
  await z2.connect();
  await z2.waitFor(() => z2.snapshots.length === 1);
  await server.podDeleted('good');
  assert.ok(z2.received.some((r) => r.kind === 'del'));
});

test('a client that never acks: the request fails after the ack deadline, that connection is dropped, the others serve on', async () => {
  const { server, standIn, log } = setup();
  const good = standIn();
  await good.connect();
  await good.waitFor(() => good.snapshots.length === 1);
  const silent = standIn({ ack: (r) => (r.kind === 'add' ? 'never' : '') });
  await silent.connect();
  await silent.waitFor(() => silent.snapshots.length === 1);
  await until('two connections', () => server.connections === 2, 3000);

  const h = NetnsHandle.open('/proc/self/ns/net');
  cleanups.push(() => h.release());
  const t0 = Date.now();
  await assert.rejects(server.podAdded('p1', wl('p1'), h), (e: ZdsError) => e.kind === 'io' && /no ack/.test(e.message));
  assert.ok(Date.now() - t0 >= 350, 'waited for the ack deadline');
  await until('silent client dropped', () => server.connections === 1, 3000);
  await silent.waitFor(() => silent.disconnectedByAgent, 2000, 'agent closing the silent client');
  assert.ok(log.has('warn', /ztunnel connection closed/));
  // The retry goes to the remaining connection.
  await server.podAdded('p1', wl('p1'), h);
  assert.ok(good.received.some((r) => r.kind === 'add' && r.uid === 'p1'));
});

test('bad hellos: garbage, oversized, none at all, and an empty record are each refused; the server keeps accepting', async () => {
  const { server, standIn, log } = setup({ timeouts: { helloMs: 300 } });
  const garbage = standIn({ hello: Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]) });
  await garbage.connect();
  await garbage.waitFor(() => garbage.disconnectedByAgent, 2000, 'garbage hello refused');

  const oversized = standIn({ hello: Buffer.concat([encodeHello(1), Buffer.alloc(4096, 0x08)]) });
  await oversized.connect();
  await oversized.waitFor(() => oversized.disconnectedByAgent, 2000, 'oversized hello refused');
  assert.ok(log.entries.some((e) => /truncated/.test(String(e.fields?.reason))));

  const mute = SeqpacketSocket.connect(server.path);
  cleanups.push(() => mute.close());
  const eof = await mute.recv({ maxBytes: 64, timeoutMs: 2000 });
  assert.equal(eof.data.length, 0, 'a client that says nothing is closed after the hello deadline');

  const ok = standIn();
  await ok.connect();
  await ok.waitFor(() => ok.snapshots.length === 1, 2000, 'a good client still served');
  await until('only the good one left', () => server.connections === 1, 3000);
});

test('oversized, garbage and fd-carrying acks close the connection and fail the request', async () => {
  for (const [what, reply] of [
    ['oversized', Buffer.concat([encodeAck(''), Buffer.alloc(2000, 0)])],
    ['garbage', Buffer.from([0x0a, 0x7f, 0x01])],
  ] as const) {
    const { server } = setup();
    const raw = SeqpacketSocket.connect(server.path);
    cleanups.push(() => raw.close());
    await raw.send(encodeHello(1));
    const snap = await raw.recv({ maxBytes: 1024, timeoutMs: 2000 }); // SnapshotSent (empty cache)
    assert.ok(snap.data.length > 0);
    await raw.send(encodeAck(''));
    await until('connected', () => server.connections === 1, 3000);
    await new Promise((r) => setTimeout(r, 50));
    const h = NetnsHandle.open('/proc/self/ns/net');
    const p = server.podAdded('u', wl('u'), h);
    const req = await raw.recv({ maxBytes: 1024, maxFds: 2, timeoutMs: 2000 });
    for (const fd of req.fds) fs.closeSync(fd);
    await raw.send(reply);
    await assert.rejects(p, (e: ZdsError) => e.kind === 'io', what);
    await until(`${what}: connection dropped`, () => server.connections === 0, 3000);
    h.release();
  }
});

test('a ztunnel that sends something while nothing was asked is dropped (protocol error); one that closes is noticed at once', async () => {
  const { server, log } = setup();
  const raw = SeqpacketSocket.connect(server.path);
  cleanups.push(() => raw.close());
  await raw.send(encodeHello(1));
  await raw.recv({ maxBytes: 1024, timeoutMs: 2000 });
  await raw.send(encodeAck(''));
  await until('connected', () => server.connections === 1, 3000);
  await new Promise((r) => setTimeout(r, 50));
  await raw.send(encodeAck('unsolicited'));
  await until('dropped', () => server.connections === 0, 3000);
  assert.ok(log.entries.some((e) => /protocol error/.test(String(e.fields?.reason))));

  const quitter = SeqpacketSocket.connect(server.path);
  await quitter.send(encodeHello(1));
  await quitter.recv({ maxBytes: 1024, timeoutMs: 2000 });
  await quitter.send(encodeAck(''));
  await until('connected', () => server.connections === 1, 3000);
  const t0 = Date.now();
  quitter.close();
  await until('close noticed', () => server.connections === 0, 3000);
  assert.ok(Date.now() - t0 < 1000, 'no keepalive period to wait for');
});

test('connections are accepted at most 5 a second (the rest wait in the backlog)', async () => {
  const { server, standIn } = setup({ timeouts: { acceptIntervalMs: 200 } });
  const zs = [standIn(), standIn(), standIn()];
  const t0 = Date.now();
  await Promise.all(zs.map((z) => z.connect()));
  await Promise.all(zs.map((z) => z.waitFor(() => z.snapshots.length === 1, 3000)));
  assert.ok(Date.now() - t0 >= 380, `three accepts took ${Date.now() - t0} ms`);
  assert.equal(server.stats.accepted, 3);
});

test('a queued Add keeps its netns fd open even if the pod is removed before it is sent', async () => {
  const { server, standIn, cache } = setup();
  const z = standIn();
  await z.connect();
  await z.waitFor(() => z.snapshots.length === 1);
  const adds = [];
  for (let i = 0; i < 5; i++) {
    const h = cache.upsert(`q${i}`, wl(`q${i}`), NetnsHandle.open('/proc/self/ns/net'));
    adds.push(server.podAdded(`q${i}`, wl(`q${i}`), h));
    cache.take(`q${i}`)!.release(); // the cache lets go at once
  }
  await Promise.all(adds);
  const got = z.received.filter((r) => r.kind === 'add');
  assert.equal(got.length, 5);
  for (const r of got) assert.ok(r.kind === 'add' && r.fdIno === ownNetnsIno);
});

test('the socket file: a stale one is replaced; close removes it', async () => {
  const p = path.join(dir, 'stale.sock');
  // The first server's socket file is what a crashed agent leaves behind.
  const first = ZtunnelServer.listen({ path: p, log: new MemoryLogger(), snapshot: () => [] });
  const second = ZtunnelServer.listen({ path: p, log: new MemoryLogger(), snapshot: () => [] });
  const z = new ZtunnelStandIn(p);
  await z.connect();
  await z.waitFor(() => z.snapshots.length === 1);
  z.close();
  second.close();
  assert.equal(fs.existsSync(p), false);
  first.close();
  assert.equal(second.connections, 0);
});
