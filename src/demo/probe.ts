// The demo's stand-ins for Envoy, the app and a web server outside the pod, run inside a network
// namespace with `ip netns exec`.
//   server <port> <label>   listen on every IPv4 address; answer each connection with one JSON
//                           line: label, local and remote address, and the original destination
//                           when the connection was redirected (SO_ORIGINAL_DST); print "ready";
//                           exit when stdin closes (the demo is gone)
//   client <host> <port>    connect, print the server's line; exit 1 on error or after 3 s
import * as net from 'node:net';

type OriginalDst = { address: string; port: number } | null;

async function originalDst(sock: net.Socket): Promise<OriginalDst> {
  const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number') return null;
  try {
    // Loaded only in server mode: the addon reads conntrack's record of the pre-NAT destination.
    const { getOriginalDst } = await import('../netns/nft');
    const o = getOriginalDst(fd);
    return { address: o.address, port: o.port };
  } catch {
    return null; // not redirected: no conntrack NAT entry
  }
}

function server(port: number, label: string): void {
  const srv = net.createServer(async (c) => {
    const dst = await originalDst(c);
    c.end(
      `${JSON.stringify({
        label,
        local: `${c.localAddress}:${c.localPort}`,
        remote: `${c.remoteAddress}:${c.remotePort}`,
        originalDst: dst,
      })}\n`,
    );
  });
  srv.on('error', (e) => {
    process.stderr.write(`${label}: ${e.message}\n`);
    process.exit(1);
  });
  srv.listen({ host: '0.0.0.0', port }, () => process.stdout.write('ready\n'));
  process.on('SIGTERM', () => process.exit(0));
  // The demo holds our stdin open: when it goes away, however it goes, so do we.
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}

function client(host: string, port: number): void {
  const fail = (why: string) => {
    process.stdout.write(`ERR ${why}\n`);
    process.exit(1);
  };
  setTimeout(() => fail('timeout'), 3000).unref();
  let data = '';
  const c = net.connect({ host, port });
  c.on('data', (d) => (data += d));
  c.on('end', () => {
    process.stdout.write(data);
    process.exit(data ? 0 : 1);
  });
  c.on('error', (e) => fail(e.message));
}

const [mode, a, b] = process.argv.slice(2);
if (mode === 'server') server(Number(a), b ?? '');
else if (mode === 'client') client(a, Number(b));
else {
  process.stderr.write('usage: probe.js server <port> <label> | client <host> <port>\n');
  process.exit(2);
}
