// The CNI shim (native/cni-shim.c) from the payload: with the agent's server
// (src/agent/cni-server.ts, the real handleCni with production deps) it answers through the agent,
// byte for byte what the standalone plugin answers, rules included; without a trustworthy,
// working agent it runs the standalone plugin instead: no socket, a stale socket, a socket or
// directory that is not root's and closed, a listener that is not root, an agent that hangs
// before or after acknowledging, replies that are not CNI results. Never a hang, never an empty
// stdout where a result is due. Needs root (root-owned sockets, network namespaces).
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { CHUNK, CniServer, SHIM_SOCKET_NAME, encodeReply, startCniServer } from '../../../src/agent/cni-server';
import { SeqpacketListener, SeqpacketSocket, closeFd } from '../../../src/netns/seqpacket';
import { ScopeLevels } from '../../../src/log/levels';
import { agentLogger } from '../../../src/log/winston-backend';
import { sidecarPod } from '../../support/cni-fakes';
import { PodApi, SHIM_NAME, ensurePayload, runAsync, standaloneArgv, startPodApi } from '../../support/payload';
import { inNetns, makeNetns, requireRootAndTools } from '../../support/root';
import { tempDir } from '../../support/tmp';

let payload: string;
let shim: string;
/** The standalone plugin, started as the shim starts it (its loader, its libraries). */
let plugin: string[];
let api: PodApi;
let sock: string;
const namespaces: ReturnType<typeof makeNetns>[] = [];
const agentLines: string[] = [];
const log = agentLogger({ levels: new ScopeLevels('debug'), targets: [new Writable({ write: (c, _e, cb) => (agentLines.push(String(c)), cb()) })] }).withScope(
  'test',
);

before(async () => {
  requireRootAndTools('ip', 'nft', 'openssl', 'flock', 'python3', 'setpriv');
  payload = ensurePayload();
  shim = path.join(payload, SHIM_NAME);
  plugin = standaloneArgv(payload);
  api = await startPodApi();
  sock = path.join(api.runDir, SHIM_SOCKET_NAME);
  api.pods.set('shop/web-1', sidecarPod({ name: 'web-1', namespace: 'shop' }));
  api.pods.set('shop/plain', { metadata: { name: 'plain', namespace: 'shop' }, spec: { containers: [{ name: 'app' }] } });
  api.pods.set('shop/bad', sidecarPod({ name: 'bad', annotations: { 'traffic.sidecar.istio.io/includeOutboundIPRanges': '10.0.0.0/8; flush ruleset' } }));
});
after(async () => {
  for (const ns of namespaces) ns.remove();
  await api?.close();
});

const prevResult = { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: '/run/netns/x' }], ips: [{ address: '10.0.0.2/24', interface: 0 }] };
const conf = (over: Record<string, unknown> = {}) =>
  JSON.stringify({
    cniVersion: '1.0.0',
    name: 'k8s-pod-network',
    type: 'istio-cni',
    cni_agent_run_dir: api.runDir,
    plugin_log_level: 'debug',
    exclude_namespaces: ['kube-system'],
    pod_namespace: 'istio-system',
    prevResult,
    ...over,
  });
const env = (command: string, netns: string, pod = 'web-1', over: Record<string, string> = {}) => ({
  CNI_COMMAND: command,
  CNI_CONTAINERID: 'c0ffee',
  CNI_NETNS: netns,
  CNI_IFNAME: 'eth0',
  CNI_PATH: '/opt/cni/bin',
  CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=${pod}`,
  ...over,
});

interface Out {
  stdout: string;
  code: number | null;
  stderr: string;
  ms: number;
}

async function exec(file: string | string[], e: Record<string, string>, stdin: string, timeoutMs = 20_000): Promise<Out> {
  const t0 = process.hrtime.bigint();
  const [cmd, ...args] = Array.isArray(file) ? file : [file];
  const r = await runAsync(cmd, args, { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...e }, stdin, timeoutMs });
  return { stdout: r.stdout, code: r.code, stderr: r.stderr, ms: Number(process.hrtime.bigint() - t0) / 1e6 };
}

/** A correct CNI answer: a JSON object and a newline (or nothing, for a good DEL/CHECK/STATUS). */
function assertCni(o: Out, command: string): void {
  if (o.stdout === '') {
    assert.ok(o.code === 0 && ['DEL', 'CHECK', 'STATUS', 'GC'].includes(command), `empty stdout for ${command}, exit ${o.code}: ${o.stderr}`);
    return;
  }
  assert.ok(o.stdout.endsWith('}\n') && o.stdout.indexOf('\n') === o.stdout.length - 1, JSON.stringify(o.stdout));
  JSON.parse(o.stdout);
}

async function withAgent<T>(fn: (server: CniServer) => Promise<T>): Promise<T> {
  const server = await startCniServer(sock, { pluginLog: log.withScope('cni-plugin'), agentLog: log.withScope('cni-agent') });
  try {
    return await fn(server);
  } finally {
    await server.close();
  }
}

test('the socket the agent serves is root-owned, 0600, in a directory closed to others; closing removes it', async () => {
  await withAgent(async () => {
    const st = fs.statSync(sock);
    assert.ok(st.isSocket());
    assert.equal(st.uid, 0);
    assert.equal(st.mode & 0o777, 0o600);
  });
  assert.ok(!fs.existsSync(sock));
});

test('byte-identical: standalone plugin and shim -> agent, for VERSION, bad input, pass-through, STATUS and bad annotations', async () => {
  const cases: [string, Record<string, string>, string][] = [
    ['VERSION', { CNI_COMMAND: 'VERSION' }, '{"cniVersion":"0.4.0","cni_agent_run_dir":"RUN"}'],
    ['ADD', { CNI_COMMAND: 'ADD' }, conf()],
    ['ADD', env('ADD', '/run/netns/icts-no-such-netns', 'web-1', { CNI_IFNAME: 'eth 0' }), conf()],
    ['ADD', env('ADD', '/run/netns/icts-no-such-netns'), conf({ cniVersion: '9.9.9' })],
    ['ADD', env('ADD', '/run/netns/icts-no-such-netns'), conf({ name: '' })],
    ['ADD', env('ADD', '/run/netns/icts-no-such-netns', 'plain'), conf()],
    ['ADD', env('ADD', '/run/netns/icts-no-such-netns', 'plain'), conf({ padding: 'x'.repeat(300_000) })],
    ['ADD', env('ADD', '/run/netns/icts-no-such-netns', 'bad'), conf()],
    ['ADD', env('ADD', '/run/netns/icts-no-such-netns', 'ghost'), conf({ pod_lookup_attempts: 2, pod_lookup_interval_ms: 10 })],
    ['ADD', env('ADD', '/proc/self/ns/net'), conf()],
    ['DEL', env('DEL', '/run/netns/icts-no-such-netns'), conf()],
    ['STATUS', { CNI_COMMAND: 'STATUS' }, conf({ cniVersion: '1.1.0' })],
    ['STATUS', { CNI_COMMAND: 'STATUS' }, conf({ cniVersion: '1.1.0', cni_agent_run_dir: api.runDir, pod_namespace: 'x' })],
  ];
  await withAgent(async (server) => {
    for (const [cmd, e, rawStdin] of cases) {
      const stdin = rawStdin.replace('"RUN"', JSON.stringify(api.runDir));
      const before = server.served();
      const viaAgent = await exec(shim, e, stdin);
      assert.equal(server.served(), before + 1, `${JSON.stringify(e)} was answered by the agent (stderr: ${viaAgent.stderr})`);
      const standalone = await exec(plugin, e, stdin);
      assertCni(standalone, cmd);
      // The one time-dependent text: how long the pod lookup retried ("after 2 attempts in 22 ms").
      const timeless = (t: string) => t.replace(/ in \d+ ms\)/, ' in N ms)');
      assert.equal(timeless(viaAgent.stdout), timeless(standalone.stdout), `${JSON.stringify(e)} ${stdin}`);
      assert.equal(viaAgent.code, standalone.code, `${JSON.stringify(e)}: exit code`);
    }
  });
});

test('byte-identical with rules: ADD, CHECK, DEL of a sidecar pod, standalone in one netns, shim -> agent in another', async () => {
  const a = makeNetns('shim-standalone');
  const b = makeNetns('shim-agent');
  namespaces.push(a, b);
  await withAgent(async (server) => {
    for (const cmd of ['ADD', 'CHECK', 'DEL']) {
      const standalone = await exec(plugin, env(cmd, a.path), conf());
      const n = server.served();
      const viaAgent = await exec(shim, env(cmd, b.path), conf());
      assert.equal(server.served(), n + 1, `${cmd} answered by the agent: ${viaAgent.stderr}`);
      assertCni(standalone, cmd);
      assert.equal(standalone.code, 0, `${cmd}: ${standalone.stdout}${standalone.stderr}`);
      assert.equal(viaAgent.stdout, standalone.stdout, cmd);
      assert.equal(viaAgent.code, standalone.code, cmd);
      const [ra, rb] = [inNetns(a.name, ['nft', 'list', 'ruleset']), inNetns(b.name, ['nft', 'list', 'ruleset'])];
      assert.equal(rb, ra, `${cmd}: the same rules`);
      if (cmd === 'ADD') assert.match(ra, /table inet istio-proxy-nat/);
      if (cmd === 'DEL') assert.doesNotMatch(ra, /istio-proxy/);
    }
  });
  assert.ok(
    agentLines.some((l) => /cni-plugin\tADD: sidecar capture applied/.test(l)),
    "the plugin's logs are in the agent's output",
  );
  assert.ok(!agentLines.some((l) => l.includes(api.token)), 'never the token');
});

test("the netns travels as a descriptor: a CNI_NETNS that only the runtime's mount namespace has is still the pod's netns to the agent", async () => {
  // The runtime mounts its pod netns files in a mount namespace the agent's container does not
  // share: there, CNI_NETNS is only an empty mount-point file. Here: the shim runs in a private
  // mount namespace where the file is the netns; the agent (this process) sees the empty file.
  const pod = makeNetns('shim-mntns');
  const ref = makeNetns('shim-mntns-ref');
  namespaces.push(pod, ref);
  const dir = tempDir(path.join(os.tmpdir(), 'icts-mntns-'));
  const hidden = path.join(dir, 'cni-netns');
  fs.writeFileSync(hidden, '');
  try {
    const inRuntimeMounts = (cmd: string, e: Record<string, string>) =>
      runAsync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', `mount --bind ${pod.path} ${hidden} && exec ${cmd}`], {
        env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...e },
        stdin: conf(),
        timeoutMs: 20_000,
      });
    await withAgent(async (server) => {
      const n = server.served();
      const viaAgent = await inRuntimeMounts(shim, env('ADD', hidden));
      assert.equal(server.served(), n + 1, `answered by the agent: ${viaAgent.stderr}`);
      assert.equal(viaAgent.code, 0, viaAgent.stdout + viaAgent.stderr);
      assert.deepEqual(JSON.parse(viaAgent.stdout), prevResult);
      assert.match(inNetns(pod.name, ['nft', 'list', 'ruleset']), /table inet istio-proxy-nat/, 'the rules are in the pod netns');
      const standalone = await exec(plugin, env('ADD', ref.path), conf());
      assert.equal(viaAgent.stdout, standalone.stdout);
      assert.equal(inNetns(pod.name, ['nft', 'list', 'ruleset']), inNetns(ref.name, ['nft', 'list', 'ruleset']));
      const del = await inRuntimeMounts(shim, env('DEL', hidden));
      assert.equal(server.served(), n + 2);
      assert.deepEqual([del.code, del.stdout], [0, '']);
      assert.doesNotMatch(inNetns(pod.name, ['nft', 'list', 'ruleset']), /istio-proxy/);
      // A netns the shim cannot open is "missing", as it is for the standalone plugin.
      const gone = await exec(shim, env('ADD', path.join(dir, 'no-such-netns')), conf());
      const goneRef = await exec(plugin, env('ADD', path.join(dir, 'no-such-netns')), conf());
      assert.equal(server.served(), n + 3);
      assert.equal(gone.stdout, goneRef.stdout);
      assert.equal(JSON.parse(gone.stdout).code, 104);
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------
// Fallbacks: each gives what the standalone plugin gives.

let expectedPlain: Out | undefined;
async function expectFallback(what: string, opts: { env?: Record<string, string>; stdin?: string; maxMs?: number; minMs?: number } = {}): Promise<Out> {
  const e = { ...env('ADD', '/run/netns/icts-no-such-netns', 'plain'), ...opts.env };
  expectedPlain ??= await exec(plugin, env('ADD', '/run/netns/icts-no-such-netns', 'plain'), conf());
  assert.equal(expectedPlain.code, 0, expectedPlain.stdout + expectedPlain.stderr);
  const o = await exec(shim, e, opts.stdin ?? conf());
  assert.equal(o.stdout, expectedPlain.stdout, `${what}: the standalone plugin's answer (stderr: ${o.stderr})`);
  assert.equal(o.code, 0, what);
  if (opts.maxMs !== undefined) assert.ok(o.ms < opts.maxMs, `${what}: took ${o.ms.toFixed(0)} ms`);
  if (opts.minMs !== undefined) assert.ok(o.ms >= opts.minMs, `${what}: took ${o.ms.toFixed(0)} ms, before the timeout`);
  return o;
}

/** A SOCK_SEQPACKET server on the shim's socket path that does what `onConn` says, 0600 like the agent's. */
async function fakeAgent(onConn: (s: SeqpacketSocket) => void, mode = 0o600): Promise<{ close(): Promise<void>; conns: () => number }> {
  let conns = 0;
  const open = new Set<SeqpacketSocket>();
  const old = process.umask(0o177);
  let listener: SeqpacketListener;
  try {
    listener = SeqpacketListener.listen(sock, () => {
      for (let s = listener.accept(); s; s = listener.accept()) {
        conns++;
        open.add(s);
        onConn(s);
      }
    });
  } finally {
    process.umask(old);
  }
  fs.chmodSync(sock, mode);
  return {
    conns: () => conns,
    close: async () => {
      for (const s of open) s.close();
      listener.close();
    },
  };
}

/** Reads the whole request (header record, then env + stdin records), then calls `then`. */
function afterRequest(then: (s: SeqpacketSocket) => void | Promise<void>): (s: SeqpacketSocket) => void {
  return (s) => {
    void (async () => {
      const head = await s.recv({ maxBytes: 64, maxFds: 1 });
      for (const fd of head.fds) closeFd(fd);
      let left = head.data.readUInt32BE(8) + head.data.readUInt32BE(12);
      while (left > 0) left -= (await s.recv({ maxBytes: CHUNK })).data.length;
      await then(s);
    })().catch(() => undefined);
  };
}

/** Sends records, then closes. */
const sendAll = (recs: Buffer[]) => async (s: SeqpacketSocket) => {
  for (const r of recs) await s.send(r);
  s.close();
};

test('fallback: no socket, and a stale socket (nobody listening), at once', async () => {
  fs.rmSync(sock, { force: true });
  await expectFallback('no socket', { maxMs: 15_000 });
  const py = spawnSync('python3', ['-c', `import os, socket; os.umask(0o177); s = socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(sock)})`]);
  assert.equal(py.status, 0, String(py.stderr));
  assert.ok(fs.statSync(sock).isSocket());
  try {
    await expectFallback('stale socket', { maxMs: 15_000 });
  } finally {
    fs.rmSync(sock, { force: true });
  }
});

test('fallback: the socket or its directory is not trusted (mode, owner, directory, listener not root)', async () => {
  const answer = afterRequest(sendAll([Buffer.from('ICTSACK1'), ...encodeReply({ stdout: '{"cniVersion":"1.0.0","forged":true}\n', exitCode: 0 })]));
  for (const [what, mode] of [
    ['socket 0666', 0o666],
    ['socket 0660', 0o660],
    ['socket 0700', 0o700],
  ] as const) {
    const f = await fakeAgent(answer, mode);
    try {
      await expectFallback(what);
      assert.equal(f.conns(), 0, `${what}: never connected`);
    } finally {
      await f.close();
    }
  }
  const f = await fakeAgent(answer);
  try {
    fs.chownSync(sock, 65534, 65534);
    await expectFallback('socket owned by nobody');
    assert.equal(f.conns(), 0);
    fs.chownSync(sock, 0, 0);
    fs.chmodSync(api.runDir, 0o777);
    await expectFallback('directory writable by others');
    fs.chmodSync(api.runDir, 0o755);
    fs.chownSync(api.runDir, 65534, 0);
    await expectFallback('directory owned by nobody');
    assert.equal(f.conns(), 0);
  } finally {
    fs.chownSync(api.runDir, 0, 0);
    fs.chmodSync(api.runDir, 0o750);
    await f.close();
  }
  // A listener that is not root: its socket made elsewhere, then moved into place and chowned,
  // so that only SO_PEERCRED can tell.
  const side = tempDir(path.join(os.tmpdir(), 'icts-nobody-'));
  fs.chmodSync(side, 0o777);
  const sideSock = path.join(side, 'agent.sock');
  const seq = JSON.stringify(path.join(__dirname, '..', '..', '..', 'src', 'netns', 'seqpacket.js'));
  const script =
    `const { SeqpacketListener } = require(${seq});` +
    `const l = SeqpacketListener.listen(${JSON.stringify(sideSock)}, () => { for (let s = l.accept(); s; s = l.accept()) {` +
    `(async () => { await s.recv({ maxBytes: 64, maxFds: 1 }); await s.send(Buffer.from('ICTSACK1'));` +
    `const b = Buffer.from('{"cniVersion":"1.0.0","forged":true}\\n'); const h = Buffer.alloc(16); h.write('ICTSRES1'); h.writeUInt32BE(0, 8); h.writeUInt32BE(b.length, 12);` +
    `await s.send(h); await s.send(b); s.close(); })().catch(() => {}); } }, { mode: 0o777 }); console.log('ready');`;
  const child = spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d) => String(d).includes('ready') && resolve());
      child.on('exit', (c) => reject(new Error(`nobody's listener exited ${c}`)));
    });
    fs.renameSync(sideSock, sock);
    fs.chownSync(sock, 0, 0);
    fs.chmodSync(sock, 0o600);
    await expectFallback('listener not root (SO_PEERCRED)');
  } finally {
    child.kill('SIGKILL');
    fs.rmSync(sock, { force: true });
    fs.rmSync(side, { recursive: true, force: true });
  }
});

test('fallback: an agent that hangs before acknowledging, and one that acknowledges and never answers', async () => {
  let f = await fakeAgent(() => undefined);
  try {
    await expectFallback('no ack', { env: { ISTIO_CNI_SHIM_ACK_TIMEOUT_MS: '400' }, minMs: 400 });
    assert.equal(f.conns(), 1);
  } finally {
    await f.close();
  }
  f = await fakeAgent(afterRequest((s) => s.send(Buffer.from('ICTSACK1'))));
  try {
    await expectFallback('ack, then silence', { env: { ISTIO_CNI_SHIM_REPLY_TIMEOUT_MS: '600' }, minMs: 600 });
  } finally {
    await f.close();
  }
});

test('fallback: replies that are not CNI results', async () => {
  const head = (code: number, len: number) => {
    const h = Buffer.alloc(16);
    h.write('ICTSRES1');
    h.writeUInt32BE(code, 8);
    h.writeUInt32BE(len, 12);
    return h;
  };
  const ack = Buffer.from('ICTSACK1');
  const replies: [string, Buffer[]][] = [
    ['HTTP instead of a frame', [ack, Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}')]],
    ['not JSON', [ack, head(0, 9), Buffer.from('not json\n')]],
    ['empty stdout for ADD', [ack, head(0, 0)]],
    ['cut short', [ack, head(0, 100), Buffer.from('{"cniVersion"')]],
    ['error without a code', [ack, head(1, 8), Buffer.from('{"x":1}\n')]],
    ['exit code out of range', [ack, head(256, 3), Buffer.from('{}\n')]],
    ['no ack at all, closed', []],
    ['length over the limit', [ack, head(0, 0xffffffff)]],
    ['a record larger than the shim takes', [ack, head(0, CHUNK + 10), Buffer.concat([Buffer.from('{"a":"'), Buffer.alloc(CHUNK, 0x61), Buffer.from('"}\n')])]],
    ['the ack and the header in one record', [Buffer.concat([ack, head(0, 3)]), Buffer.from('{}\n')]],
  ];
  for (const [what, bytes] of replies) {
    const f = await fakeAgent(afterRequest(sendAll(bytes)));
    try {
      await expectFallback(what, { maxMs: 15_000 });
      assert.equal(f.conns(), 1, what);
    } finally {
      await f.close();
    }
  }
});

test("fallback: the agent's handler fails (no reply), the shim runs the standalone plugin", async () => {
  const server = await startCniServer(sock, {
    pluginLog: log,
    agentLog: log,
    handle: async () => {
      throw new Error('boom');
    },
  });
  try {
    await expectFallback('handler threw');
  } finally {
    await server.close();
  }
});

test('neither agent nor standalone plugin: a CNI error (code 100) naming the problem, exit 1, never empty', async () => {
  const o = await exec(shim, { ...env('ADD', '/run/netns/x', 'plain'), ISTIO_CNI_SHIM_PLUGIN: '/nonexistent/istio-cni-plugin' }, conf());
  assert.equal(o.code, 1);
  const doc = JSON.parse(o.stdout);
  assert.deepEqual(Object.keys(doc), ['cniVersion', 'code', 'msg', 'details']);
  assert.equal(doc.code, 100);
  assert.equal(doc.cniVersion, '1.0.0');
  assert.match(doc.details, /\/nonexistent\/istio-cni-plugin: No such file or directory/);
});

test('the standalone plugin gets exactly the stdin the shim read (large config, VERSION without stdin)', async () => {
  const big = conf({ padding: 'x'.repeat(300_000) });
  const a = await exec(plugin, env('ADD', '/run/netns/icts-no-such-netns', 'plain'), big);
  const b = await exec(shim, env('ADD', '/run/netns/icts-no-such-netns', 'plain'), big);
  assert.equal(b.stdout, a.stdout);
  assert.equal(a.code, 0, a.stdout);
  const v = await exec(shim, { CNI_COMMAND: 'VERSION' }, '');
  assert.equal(JSON.parse(v.stdout).cniVersion, '1.1.0');
});
