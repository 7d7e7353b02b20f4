// A client of the agent's sockets, run as another user by test/root/netns/hostile-clients.test.ts
// (setpriv --reuid=65534 ..., with or without CAP_DAC_OVERRIDE so that a 0600 socket does not
// stop it before the server's own peer check does). Prints one JSON line with what happened.
//
//   node other-uid-client.js http <socket path>       POST /log or /cmdadd: status, or how it failed
//   node other-uid-client.js seqpacket <socket path>  connect, send a record, read: bytes or end of stream
//   node other-uid-client.js tcp-idle <port> <count> <holdMs>  opens <count> idle connections, holds them
import * as http from 'node:http';
import * as net from 'node:net';
import { SeqpacketSocket } from '../../src/netns/seqpacket';

async function httpPost(socketPath: string): Promise<object> {
  return new Promise((resolve) => {
    const req = http.request({ socketPath, method: 'POST', path: '/log', headers: { 'content-type': 'application/json' } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode }));
    });
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }));
    req.setTimeout(5000, () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
    req.end('[]');
  });
}

async function seqpacket(socketPath: string): Promise<object> {
  let s: SeqpacketSocket;
  try {
    s = SeqpacketSocket.connect(socketPath);
  } catch (e) {
    return { error: (e as NodeJS.ErrnoException).code ?? (e as Error).message };
  }
  try {
    // Something either server could mistake for a start: ZDS's hello is a protobuf, the shim's
    // header a 20-byte record; the server must have closed before reading either.
    await s.send(Buffer.from('ICTSCNI2\0\0\0\0\0\0\0\0\0\0\0\0', 'latin1'), undefined, 2000).catch(() => undefined);
    const r = await s.recv({ maxBytes: 4096, timeoutMs: 5000 });
    return r.data.length === 0 ? { closed: true } : { bytes: r.data.length };
  } catch (e) {
    // A server that closes with our record unread resets the connection: closed all the same.
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ECONNRESET') return { closed: true, reset: true };
    return { error: code ?? (e as Error).message };
  } finally {
    s.close();
  }
}

async function tcpIdle(port: number, count: number, holdMs: number): Promise<object> {
  const socks: net.Socket[] = [];
  let connected = 0;
  let failed = 0;
  for (let i = 0; i < count; i++) {
    const s = net.connect({ host: '127.0.0.1', port });
    s.on('connect', () => connected++);
    s.on('error', () => failed++);
    socks.push(s);
  }
  await new Promise((r) => setTimeout(r, holdMs));
  for (const s of socks) s.destroy();
  return { connected, failed };
}

async function main(): Promise<void> {
  const [kind, a, b, c] = process.argv.slice(2);
  const out =
    kind === 'http'
      ? await httpPost(a)
      : kind === 'seqpacket'
        ? await seqpacket(a)
        : kind === 'tcp-idle'
          ? await tcpIdle(Number(a), Number(b), Number(c))
          : { error: `unknown kind ${kind}` };
  process.stdout.write(`${JSON.stringify({ uid: process.getuid?.(), ...out })}\n`);
}

void main();
