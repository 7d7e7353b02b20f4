// A closed SOCK_SEQPACKET socket (and listener) must be garbage-collectable: the native watcher
// keeps its callback in a global handle, and a callback holding the socket kept every socket the
// agent ever accepted (one per CNI request on cni-shim.sock) alive: ~2 sockets and watchers per
// pod in a churn soak.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { SeqpacketListener, SeqpacketSocket } from '../../src/netns/seqpacket';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

async function collect(): Promise<void> {
  for (let i = 0; i < 6; i++) {
    // WeakRef targets are kept for the rest of the current job: let it end first.
    await new Promise((r) => setImmediate(r));
    gc();
  }
}

test('closed seqpacket sockets and listeners are garbage collected (none retained per connection)', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'icts-seqgc-'));
  const N = 50;
  const refs: WeakRef<object>[] = [];
  try {
    await (async () => {
      const listener = SeqpacketListener.listen(path.join(dir, 's.sock'), () => undefined);
      listener.pause();
      for (let i = 0; i < N; i++) {
        const client = SeqpacketSocket.connect(listener.path);
        const server = listener.accept();
        assert.ok(server, 'a connection to accept');
        // Used like the CNI server does: a record each way, then closed.
        await client.send(Buffer.from(`req-${i}`));
        assert.equal((await server.recv({ maxBytes: 64, timeoutMs: 2000 })).data.toString(), `req-${i}`);
        await server.send(Buffer.from('ok'));
        assert.equal((await client.recv({ maxBytes: 64, timeoutMs: 2000 })).data.toString(), 'ok');
        server.close();
        client.close();
        refs.push(new WeakRef(server), new WeakRef(client));
      }
      listener.close();
      refs.push(new WeakRef(listener));
    })();
    await collect();
    const alive = refs.filter((r) => r.deref() !== undefined).length;
    assert.equal(alive, 0, `${alive} of ${refs.length} closed sockets/listeners still reachable`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
