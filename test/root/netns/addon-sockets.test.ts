// getOriginalDst and createTransparentListenSocket against real connections, all inside
// namespaces this test makes: a REDIRECT on loopback, and TPROXY across a veth pair.
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { promisify } from 'node:util';
import { applyNft, createTransparentListenSocket, currentNetnsId, getOriginalDst, withNetnsSync } from '../../../src/netns/nft';
import { Netns, makeNetns, removeAllNetns, requireRootAndTools } from './addon-support';

const run = promisify(execFile);
const OWN_NETNS = fs.readlinkSync('/proc/self/ns/net');

before(() => requireRootAndTools());
after(() => removeAllNetns());

// A client in a netns: connects, prints what the server answers. Exits 2 after 5 s.
const CLIENT = `
const s = require('net').connect({ host: process.argv[1], port: +process.argv[2] });
let data = '';
s.on('data', (d) => (data += d));
s.on('end', () => { process.stdout.write(data); process.exit(0); });
s.on('error', (e) => { console.error(e.message); process.exit(1); });
setTimeout(() => { console.error('timeout'); process.exit(2); }, 5000).unref();
`;

/** What the reporter on the other end wrote back: the original destination it read, and its own address. */
interface Report {
  dst: unknown;
  local: { address: string; port: number };
}

async function connectFrom(ns: Netns, host: string, port: number): Promise<Report> {
  const { stdout } = await run('ip', ['netns', 'exec', ns.name, process.execPath, '-e', CLIENT, host, String(port)]);
  return JSON.parse(stdout) as Report;
}

function fdOf(sock: net.Socket): number {
  return (sock as unknown as { _handle: { fd: number } })._handle.fd;
}

function reporter(sock: net.Socket): void {
  let dst: unknown;
  try {
    dst = getOriginalDst(fdOf(sock));
  } catch (e) {
    dst = { error: (e as NodeJS.ErrnoException).code };
  }
  sock.end(JSON.stringify({ dst, local: { address: sock.localAddress, port: sock.localPort } }));
}

describe('getOriginalDst after a REDIRECT', () => {
  let ns: Netns;
  let server: net.Server;
  before(async () => {
    ns = makeNetns();
    await applyNft(
      ns.path,
      'add table inet t\n' + 'add chain inet t out { type nat hook output priority -100 ; }\n' + 'add rule inet t out tcp dport 9999 redirect to :15001\n',
    );
    server = net.createServer(reporter);
    // Without a host, listen(port) binds [::]:port (dual-stack) synchronously: inside ns.
    withNetnsSync(ns.path, () => server.listen(15001));
    await new Promise((r) => server.once('listening', r));
  });
  after(() => {
    server?.close();
    ns?.remove();
  });

  test('IPv4 (on a dual-stack socket, v4-mapped)', async () => {
    const r = await connectFrom(ns, '127.0.0.2', 9999);
    assert.deepEqual(r.dst, { address: '127.0.0.2', port: 9999, family: 'IPv4' });
    assert.equal(r.local.port, 15001);
  });

  test('IPv6', async () => {
    const r = await connectFrom(ns, '::1', 9999);
    assert.deepEqual(r.dst, { address: '::1', port: 9999, family: 'IPv6' });
    assert.equal(r.local.port, 15001);
  });

  test('a connection that was not redirected reports where it went', async () => {
    const r = await connectFrom(ns, '127.0.0.1', 15001);
    assert.deepEqual(r.dst, { address: '127.0.0.1', port: 15001, family: 'IPv4' });
  });

  test('not a socket: a clear error', () => {
    const fd = fs.openSync('/dev/null', 'r');
    try {
      assert.throws(
        () => getOriginalDst(fd),
        (e: NodeJS.ErrnoException) => e.code === 'ENOTSOCK' && /getsockname/.test(e.message),
      );
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('createTransparentListenSocket as a TPROXY target', () => {
  let client: Netns;
  let pod: Netns;
  const servers: net.Server[] = [];
  before(async () => {
    client = makeNetns();
    pod = makeNetns();
    // The veth pair is made inside the client netns and its peer moved straight into the pod's.
    const ipc = (...args: string[]) => execFileSync('ip', ['-n', client.name, ...args]);
    const ipp = (...args: string[]) => execFileSync('ip', ['-n', pod.name, ...args]);
    ipc('link', 'add', 'va', 'type', 'veth', 'peer', 'name', 'vb', 'netns', pod.name);
    ipc('addr', 'add', '192.0.2.1/24', 'dev', 'va');
    ipc('addr', 'add', '2001:db8:1::1/64', 'dev', 'va', 'nodad');
    ipc('link', 'set', 'va', 'up');
    ipp('addr', 'add', '192.0.2.2/24', 'dev', 'vb');
    ipp('addr', 'add', '2001:db8:1::2/64', 'dev', 'vb', 'nodad');
    ipp('link', 'set', 'vb', 'up');
    await applyNft(
      pod.path,
      'add table inet tp\n' +
        'add chain inet tp pre { type filter hook prerouting priority -150 ; }\n' +
        'add rule inet tp pre tcp dport 8080 ip daddr 192.0.2.2 tproxy ip to :15006 meta mark set 1337 accept\n' +
        'add rule inet tp pre tcp dport 8080 ip6 daddr 2001:db8:1::2 tproxy ip6 to :15006 meta mark set 1337 accept\n',
    );
    for (const [family, any] of [
      [4, '0.0.0.0'],
      [6, '::'],
    ] as const) {
      const fd = withNetnsSync(pod.path, () => createTransparentListenSocket(family, any, 15006));
      const s = net.createServer(reporter);
      servers.push(s);
      await new Promise<void>((r) => s.listen({ fd }, r));
    }
    assert.equal(currentNetnsId(), OWN_NETNS);
  });
  after(() => {
    servers.forEach((s) => s.close());
    client?.remove();
    pod?.remove();
  });

  // The kernel's tproxy only hands a connection to a socket with IP_TRANSPARENT set; the
  // accepted socket keeps the address and port the client dialled.
  test('IPv4: the listener on 15006 receives a connection to 192.0.2.2:8080, destination intact', async () => {
    const r = await connectFrom(client, '192.0.2.2', 8080);
    assert.deepEqual(r.local, { address: '192.0.2.2', port: 8080 });
  });

  test('IPv6: the listener on 15006 receives a connection to [2001:db8:1::2]:8080, destination intact', async () => {
    const r = await connectFrom(client, '2001:db8:1::2', 8080);
    assert.deepEqual(r.local, { address: '2001:db8:1::2', port: 8080 });
  });

  test('bad arguments are refused before any socket is made', () => {
    assert.throws(() => createTransparentListenSocket(4, '::', 1), /not an IPv4 address/);
    assert.throws(() => createTransparentListenSocket(6, '1.2.3.4', 1), /not an IPv6 address/);
    assert.throws(() => createTransparentListenSocket(4, '127.0.0.1', 70000), /port must be 0-65535/);
  });
});
