// Issue 13: the agent survives hostile local clients. The node agent runs as a process (its
// health, metrics, log.sock and cni-shim.sock servers); the ambient servers (pluginevent.sock,
// ZDS) run in this process. Each attack of the security review is replayed: sockets made under
// umask 000, clients of another uid (with CAP_DAC_OVERRIDE, so only the server's peer check stands
// in the way), a shim request dripped one record every 3 s, 40 clients buffering 9 MiB each, and
// 1,100 idle connections to the health port held by uid 65534. Asserted on the agent's real
// state (/proc: fds, RSS) and on a real ADD through the payload's shim, answered by the agent
// (the fallback plugin is disabled). Needs root; fails loudly without it.
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { AgentProc, startAgentFor, stopAgentCleanly } from '../../support/agent-proc';
import { until } from '../../support/until';
import { ApiStandIn, startApiStandIn } from '../../support/kube-api';
import { sidecarPod } from '../../support/cni-fakes';
import { CniRun } from '../../support/cni-run';
import { SHIM_NAME, ensurePayload, runAsync } from '../../support/payload';
import { inNetns, makeNetns, requireRootAndTools } from '../../support/root';
import { tempDir } from '../../support/tmp';
import { SeqpacketSocket } from '../../../src/netns/seqpacket';
import { CHUNK, agentCniHandler, startCniServer } from '../../../src/agent/cni-server';
import { startLogServer } from '../../../src/agent/logserver';
import { startCniEventServer } from '../../../src/agent/ambient/cni-event-server';
import { ZtunnelServer } from '../../../src/agent/ambient/ztunnel-server';
import { ScopeLevels } from '../../../src/log/levels';
import { agentLogger } from '../../../src/log/winston-backend';
import { LIMITS } from '../../../src/agent/limits';

const CLIENT = path.join(__dirname, '..', '..', 'support', 'other-uid-client.js');
let api: ApiStandIn;
let agent: AgentProc;
let shim: string;
let healthPort: number;
const figures: string[] = [];
const quiet = agentLogger({ levels: new ScopeLevels('error'), targets: [new PassThrough().resume()] }).withScope('test');
const noLog = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

before(async () => {
  requireRootAndTools('ip', 'nft', 'openssl', 'flock', 'setpriv');
  shim = `${ensurePayload()}/${SHIM_NAME}`;
  api = await startApiStandIn();
  api.addPod(sidecarPod({ name: 'web-1', namespace: 'shop' }));
  // The agent starts under umask 000: its sockets must be 0600 all the same.
  const old = process.umask(0);
  try {
    agent = await startAgentFor(api);
  } finally {
    process.umask(old);
  }
  healthPort = Number(/127\.0\.0\.1:(\d+)/.exec(agent.health)![1]);
});

after(async () => {
  if (agent) await stopAgentCleanly(agent);
  await api?.close();
  if (figures.length) console.log(`# hostile-clients figures\n${figures.map((f) => `#   ${f}`).join('\n')}`);
});

const rssMiB = (pid: number) => Number(/^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * One CNI command through the shim for the web-1 pod in `netnsPath` that only the agent can answer
 * (the fallback plugin does not exist). `extraMembers` is JSON text added at the end of the
 * config object: how a key comes twice.
 */
async function shimRun(command: 'ADD' | 'DEL', netnsPath: string, conf: Record<string, unknown> = {}, extraMembers = ''): Promise<CniRun> {
  const env = {
    PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: command,
    CNI_CONTAINERID: 'ctr-web-1',
    CNI_NETNS: netnsPath,
    CNI_IFNAME: 'eth0',
    CNI_PATH: '/opt/cni/bin',
    CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1',
    ISTIO_CNI_SHIM_DEBUG: '1',
    ISTIO_CNI_SHIM_PLUGIN: '/nonexistent/icts-no-fallback',
  };
  const stdin = JSON.stringify({
    cniVersion: '1.0.0',
    name: 'k8s-pod-network',
    type: 'istio-cni',
    cni_agent_run_dir: agent.dirs.run,
    exclude_namespaces: ['kube-system'],
    pod_namespace: 'istio-system',
    pod_lookup_attempts: 1,
    prevResult: { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: netnsPath }], ips: [{ address: '10.9.0.2/24', interface: 0 }] },
    ...conf,
  });
  const text = extraMembers === '' ? stdin : `${stdin.slice(0, -1)},${extraMembers}}`;
  const t0 = Date.now();
  const r = await runAsync(shim, [], { env, stdin: text, timeoutMs: 30_000 });
  return { ...r, ms: Date.now() - t0 };
}

/** An ADD through the shim into a fresh netns, answered by the agent only. */
async function shimAdd(conf: Record<string, unknown> = {}, extraMembers = ''): Promise<CniRun> {
  const ns = makeNetns('hostile');
  try {
    return await shimRun('ADD', ns.path, conf, extraMembers);
  } finally {
    ns.remove();
  }
}

function assertAnsweredByAgent(r: CniRun, what: string): void {
  assert.equal(r.code, 0, `${what}: the ADD was answered by the agent: ${r.stdout}${r.stderr}`);
  assert.match(r.stdout, /^\{"cniVersion":"1\.0\.0"/, what);
}

/** The first record of a shim request. */
function shimHeader(envLen: number, stdinLen: number): Buffer {
  const h = Buffer.alloc(20);
  h.write('ICTSCNI2', 0, 'latin1');
  h.writeUInt32BE(envLen, 8);
  h.writeUInt32BE(stdinLen, 12);
  h.writeUInt32BE(0, 16);
  return h;
}

/** Runs other-uid-client.js as uid 65534, optionally keeping CAP_DAC_OVERRIDE (past a 0600 socket). */
async function asNobody(dacOverride: boolean, ...args: string[]): Promise<Record<string, unknown>> {
  const caps = dacOverride ? ['--inh-caps=+dac_override', '--ambient-caps=+dac_override'] : [];
  // Not spawnSync: the servers under test run on this process's event loop.
  const r = await runAsync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', ...caps, process.execPath, CLIENT, ...args], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    stdin: '',
    timeoutMs: 60_000,
  });
  assert.equal(r.code, 0, `the client ran: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

test('under umask 000 every socket is 0600; a file that is not a socket is never replaced', async () => {
  for (const name of ['log.sock', 'cni-shim.sock']) {
    const st = fs.statSync(path.join(agent.dirs.run, name));
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600, `${name} of the agent started under umask 000`);
  }
  const dir = tempDir(path.join(os.tmpdir(), 'icts-hostile-'));
  const old = process.umask(0);
  try {
    const ev = await startCniEventServer(path.join(dir, 'pluginevent.sock'), async () => undefined, noLog);
    const zds = ZtunnelServer.listen({ path: path.join(dir, 'ztunnel.sock'), log: noLog, snapshot: () => [] });
    try {
      for (const name of ['pluginevent.sock', 'ztunnel.sock']) assert.equal(fs.statSync(path.join(dir, name)).mode & 0o777, 0o600, name);
    } finally {
      await ev.close();
      zds.close();
    }
  } finally {
    process.umask(old);
  }
  // A regular file and a directory at each socket path: refused with the path named, left intact.
  const starters: Record<string, (p: string) => Promise<unknown>> = {
    'log.sock': (p) => startLogServer(p, quiet, quiet),
    'cni-shim.sock': (p) => startCniServer(p, { pluginLog: quiet, agentLog: quiet }),
    'pluginevent.sock': (p) => startCniEventServer(p, async () => undefined, noLog),
    'ztunnel.sock': async (p) => ZtunnelServer.listen({ path: p, log: noLog, snapshot: () => [] }),
  };
  for (const [name, start] of Object.entries(starters)) {
    const file = path.join(dir, `file-${name}`);
    fs.writeFileSync(file, 'precious');
    await assert.rejects(start(file), (e: Error) => e.message.includes(file) && /not a socket/.test(e.message), name);
    assert.equal(fs.readFileSync(file, 'utf8'), 'precious', `${name}: the file is intact`);
    const sub = path.join(dir, `dir-${name}`);
    fs.mkdirSync(sub);
    await assert.rejects(start(sub), (e: Error) => e.message.includes(sub) && /not a socket/.test(e.message), name);
    assert.ok(fs.statSync(sub).isDirectory(), `${name}: the directory is intact`);
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a client of another uid is refused on every socket, ZDS included', async () => {
  const dir = tempDir(path.join(os.tmpdir(), 'icts-hostile-'));
  fs.chmodSync(dir, 0o755);
  let handled = 0;
  const ev = await startCniEventServer(path.join(dir, 'pluginevent.sock'), async () => void handled++, noLog);
  const zds = ZtunnelServer.listen({ path: path.join(dir, 'ztunnel.sock'), log: noLog, snapshot: () => [] });
  try {
    const sockets: [string, 'http' | 'seqpacket'][] = [
      [path.join(agent.dirs.run, 'log.sock'), 'http'],
      [path.join(agent.dirs.run, 'cni-shim.sock'), 'seqpacket'],
      [path.join(dir, 'pluginevent.sock'), 'http'],
      [path.join(dir, 'ztunnel.sock'), 'seqpacket'],
    ];
    for (const [sock, kind] of sockets) {
      // Without privileges the 0600 socket (or its 0750 directory) stops the connect.
      const plain = await asNobody(false, kind, sock);
      assert.equal(plain.error, 'EACCES', `${sock}: uid 65534 cannot connect: ${JSON.stringify(plain)}`);
      // With CAP_DAC_OVERRIDE it connects; the server's SO_PEERCRED check must close it unserved.
      const dac = await asNobody(true, kind, sock);
      assert.equal(dac.uid, 65534);
      if (kind === 'http') {
        assert.ok(
          dac.status === undefined && typeof dac.error === 'string' && dac.error !== 'TIMEOUT',
          `${sock}: closed without an HTTP answer for uid 65534: ${JSON.stringify(dac)}`,
        );
      } else assert.deepEqual({ closed: dac.closed }, { closed: true }, `${sock}: closed unserved for uid 65534: ${JSON.stringify(dac)}`);
    }
    assert.equal(zds.connections, 0, 'no ztunnel connection was made for uid 65534');
    assert.equal(zds.stats.refused, 1);
    assert.equal(handled, 0);
  } finally {
    await ev.close();
    zds.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  // Root is still served.
  assertAnsweredByAgent(await shimAdd(), 'root after the refusals');
});

test('cni-shim.sock: a request dripped one record every 3 s is dropped at the 10 s deadline; ADDs are answered meanwhile', async () => {
  const sock = SeqpacketSocket.connect(path.join(agent.dirs.run, 'cni-shim.sock'));
  const t0 = Date.now();
  let closedAt = 0;
  try {
    await sock.send(shimHeader(100, 0));
    const drip = (async () => {
      for (let i = 0; i < 10; i++) {
        await sleep(3000);
        try {
          await sock.send(Buffer.from('A=B\0'), undefined, 1000);
        } catch {
          return;
        }
      }
    })();
    const reader = sock.recv({ maxBytes: 64, timeoutMs: 30_000 }).then((r) => {
      closedAt = Date.now() - t0;
      return r;
    });
    assertAnsweredByAgent(await shimAdd(), 'an ADD while a client drips');
    const r = await reader;
    await drip;
    assert.equal(r.data.length, 0, 'the agent closed the connection without an ack');
    assert.ok(closedAt >= 9500 && closedAt < 12_000, `dropped at the deadline, not later: ${closedAt} ms`);
    figures.push(`slow drip (a record every 3 s) on cni-shim.sock dropped after ${closedAt} ms`);
  } finally {
    sock.close();
  }
});

test('cni-shim.sock: 40 clients each sending 9 MiB: bytes buffered capped, the agent RSS bounded, an ADD answered', async () => {
  const before = rssMiB(agent.pid);
  const socks: SeqpacketSocket[] = [];
  const body = Buffer.alloc(CHUNK, 0x41);
  let accepted = 0;
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, rssMiB(agent.pid))), 100);
  try {
    await Promise.all(
      Array.from({ length: 40 }, async () => {
        const s = SeqpacketSocket.connect(path.join(agent.dirs.run, 'cni-shim.sock'));
        socks.push(s);
        try {
          await s.send(shimHeader(1 << 20, 8 << 20));
          // All but the last record: the request never completes, the agent holds what came.
          for (let sent = 0; sent < (9 << 20) - CHUNK; sent += CHUNK) await s.send(body, undefined, 5000);
          accepted++;
        } catch {
          // dropped by the agent (over the byte cap): what the attack should get
        }
      }),
    );
    await sleep(500);
    peak = Math.max(peak, rssMiB(agent.pid));
    assertAnsweredByAgent(await shimAdd(), 'an ADD while 40 clients hold 9 MiB requests');
  } finally {
    clearInterval(sampler);
    for (const s of socks) s.close();
  }
  const grew = peak - before;
  figures.push(`40 x 9 MiB shim requests: ${accepted} buffered whole, agent RSS ${before.toFixed(0)} -> peak ${peak.toFixed(0)} MiB (+${grew.toFixed(0)})`);
  assert.ok(accepted <= Math.floor(LIMITS.cniShim.maxBufferedBytes / (9 << 20)), `at most the byte cap was buffered: ${accepted} requests`);
  assert.ok(grew < 160, `RSS grew by ${grew.toFixed(0)} MiB (the cap is ${LIMITS.cniShim.maxBufferedBytes >> 20} MiB of request bytes)`);
});

test('1,100 idle connections to the health port (uid 65534) and idle clients on every unix socket: the agent fds stay bounded; an ADD is answered', async () => {
  const baseFds = agent.fds().length;
  let maxFds = baseFds;
  const sampler = setInterval(() => (maxFds = Math.max(maxFds, agent.fds().length)), 50);
  const idle: SeqpacketSocket[] = [];
  const { spawn } = await import('node:child_process');
  const attacker = spawn(
    'setpriv',
    ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, CLIENT, 'tcp-idle', String(healthPort), '1100', '8000'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let attackOut = '';
  attacker.stdout.on('data', (d) => (attackOut += String(d)));
  const attackDone = new Promise<void>((r) => attacker.on('exit', () => r()));
  // Root clients that connect and say nothing: 300 on log.sock (over its cap), 200 on
  // cni-shim.sock (under its cap, so that an ADD still finds room), then 500 more there (over it).
  const { connect } = await import('node:net');
  const logIdle = Array.from({ length: 300 }, () => connect({ path: path.join(agent.dirs.run, 'log.sock') }).on('error', () => undefined));
  const connectShim = (n: number) => {
    for (let i = 0; i < n; i++) {
      try {
        idle.push(SeqpacketSocket.connect(path.join(agent.dirs.run, 'cni-shim.sock')));
      } catch {
        return; // the backlog is full: the listener is paused, as it should be
      }
    }
  };
  try {
    connectShim(200);
    await sleep(2000);
    assertAnsweredByAgent(await shimAdd(), 'an ADD under the connection flood');
    connectShim(500);
    await attackDone;
  } finally {
    clearInterval(sampler);
    for (const s of idle) s.close();
    for (const s of logIdle) s.destroy();
  }
  const attack = JSON.parse(attackOut.trim()) as { connected: number; failed: number };
  const bound = LIMITS.health.maxConnections + LIMITS.logSocket.maxConnections + LIMITS.cniShim.maxConnections + 32;
  figures.push(
    `flood: ${attack.connected} of 1100 health connections by uid 65534 connected (kernel backlog included), 300 on log.sock, ${idle.length} on cni-shim.sock; agent fds ${baseFds} -> max ${maxFds} (bound ${baseFds} + ${bound})`,
  );
  assert.ok(maxFds - baseFds <= bound, `agent fds ${baseFds} -> ${maxFds}`);
  assert.ok(maxFds < 1024, `the agent never reached FD_SETSIZE: ${maxFds}`);
  // Afterwards everything is served again.
  await until(
    'the health port answering',
    async () => {
      const r = await fetch(`http://127.0.0.1:${healthPort}/healthz`).catch(() => undefined);
      return r?.status === 200;
    },
    30_000,
    200,
  );
  assertAnsweredByAgent(await shimAdd(), 'an ADD after the flood');
});

test('after the attacks: 1,000 ADD/DEL pairs through the shim, all answered by the agent, rules applied, nothing leaked', async () => {
  const pairs = 1000;
  const inFlight = 4;
  const fdsBefore = agent.fds().length;
  const tablesOf = (name: string) => inNetns(name, ['nft', 'list', 'tables']).trim().split('\n').sort();
  let next = 0;
  let checked = 0;
  const worker = async () => {
    while (next < pairs) {
      const i = next++;
      const ns = makeNetns('pairs');
      try {
        const add = await shimRun('ADD', ns.path);
        assertAnsweredByAgent(add, `ADD ${i}`);
        // Every 50th pod: the capture tables are really in its netns.
        if (i % 50 === 0) {
          assert.ok(tablesOf(ns.name).includes('table inet istio-proxy-nat'), `pod ${i}: the nat table is applied`);
          checked++;
        }
        const del = await shimRun('DEL', ns.path);
        assert.equal(del.code, 0, `DEL ${i}: ${del.stdout}${del.stderr}`);
        assert.equal(inNetns(ns.name, ['nft', 'list', 'tables']).trim(), '', `pod ${i}: DEL left no table`);
      } finally {
        ns.remove();
      }
    }
  };
  const t0 = Date.now();
  await Promise.all(Array.from({ length: inFlight }, worker));
  const ms = Date.now() - t0;
  // Pooled API connections and timers settle after the last request.
  const fdsAfter = await until('the agent back at its fd count', () => (agent.fds().length <= fdsBefore + 8 ? agent.fds().length : undefined), 15_000, 250);
  assert.equal(fs.existsSync(`/proc/${agent.pid}`), true, 'the agent is alive');
  assert.equal(agent.proc.exitCode, null, 'the agent has not exited');
  figures.push(`${pairs} ADD/DEL pairs after the attacks in ${ms} ms (${inFlight} in flight); ${checked} netns checked; agent fds ${fdsBefore} -> ${fdsAfter}`);
});

/** Drips an HTTP header one byte every 500 ms; resolves with the ms until the server cut it. */
async function dripHeader(socketPath: string): Promise<number> {
  const { connect } = await import('node:net');
  const s = connect({ path: socketPath });
  const t0 = Date.now();
  const closed = new Promise<number>((r) => s.on('close', () => r(Date.now() - t0)));
  s.on('error', () => undefined);
  const text = 'POST /log HTTP/1.1\r\nHost: x\r\n' + 'X-Pad: ' + 'a'.repeat(100);
  let i = 0;
  const iv = setInterval(() => {
    if (!s.destroyed) s.write(text[i++ % text.length]);
  }, 500);
  const ms = await closed;
  clearInterval(iv);
  s.destroy();
  return ms;
}

test('log.sock and pluginevent.sock: a header dripped byte by byte is cut by the header timeout; an oversized event is refused', async () => {
  const dir = tempDir(path.join(os.tmpdir(), 'icts-hostile-'));
  const ev = await startCniEventServer(path.join(dir, 'pluginevent.sock'), async () => undefined, noLog);
  try {
    const [logMs, evMs] = await Promise.all([dripHeader(path.join(agent.dirs.run, 'log.sock')), dripHeader(path.join(dir, 'pluginevent.sock'))]);
    figures.push(`header drip cut after ${logMs} ms on log.sock, ${evMs} ms on pluginevent.sock`);
    for (const ms of [logMs, evMs]) assert.ok(ms < 13_000, `cut within the 10 s header timeout (+1 s check interval): ${ms} ms`);
    // 2 MiB of event: refused with 400, nothing handled.
    const http = await import('node:http');
    const status = await new Promise<number | undefined>((resolve) => {
      let code: number | undefined;
      const req = http.request({ socketPath: path.join(dir, 'pluginevent.sock'), method: 'POST', path: '/cmdadd', agent: false }, (res) => {
        code = res.statusCode;
        res.resume();
      });
      req.on('error', () => undefined);
      // Settled once the request and its socket are done: no write may fail after the test.
      req.on('close', () => resolve(code));
      req.end(Buffer.alloc(2 << 20, 0x7b));
    });
    assert.equal(status, 400, 'an event over 1 MiB is refused');
  } finally {
    await ev.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('ZDS: at most 8 connections at once; the rest wait in the backlog and are taken when one closes', async () => {
  const dir = tempDir(path.join(os.tmpdir(), 'icts-hostile-'));
  const zds = ZtunnelServer.listen({ path: path.join(dir, 'ztunnel.sock'), log: noLog, snapshot: () => [], timeouts: { helloMs: 1500, acceptIntervalMs: 0 } });
  const clients: SeqpacketSocket[] = [];
  let most = 0;
  const sampler = setInterval(() => (most = Math.max(most, zds.connections)), 10);
  try {
    // Root clients that never say hello: each is dropped at the hello timeout, the next taken.
    for (let i = 0; i < 12; i++) clients.push(SeqpacketSocket.connect(path.join(dir, 'ztunnel.sock')));
    await until('every client accepted and dropped', () => zds.stats.accepted === 12 && zds.connections === 0, 15_000, 20);
  } finally {
    clearInterval(sampler);
    for (const c of clients) c.close();
    zds.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  assert.equal(most, LIMITS.zds.maxConnections, `connections held at once: ${most}`);
});

test('duplicate cni_agent_run_dir keys: the shim uses the default, the agent refuses a config naming another dir; keys match in any case', async () => {
  const other = tempDir(path.join(os.tmpdir(), 'icts-hostile-other-'));
  // Two spellings of the key: the plugin (and the agent) would read the last, the old shim the first.
  const dup = await shimAdd({}, `"CNI_AGENT_RUN_DIR":${JSON.stringify(other)}`);
  assert.notEqual(dup.code, 0, 'no answer from an agent for an ambiguous config');
  assert.match(dup.stderr, /\/var\/run\/istio-cni/, `the shim checked the default run dir: ${dup.stderr}`);
  assert.ok(!dup.stderr.includes(agent.dirs.run) && !dup.stderr.includes(other), `neither duplicate was used: ${dup.stderr}`);
  // One key, upper case: read as the plugin reads it.
  const upper = await shimAdd({ cni_agent_run_dir: undefined, CNI_AGENT_RUN_DIR: agent.dirs.run });
  assertAnsweredByAgent(upper, 'CNI_AGENT_RUN_DIR in upper case');
  // The agent answers only for its own run dir.
  const h = agentCniHandler(quiet, { runDir: agent.dirs.run });
  try {
    const out = await h(
      { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c', CNI_NETNS: '/run/netns/none', CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin' },
      JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 'istio-cni', cni_agent_run_dir: other }),
    );
    assert.equal(out.exitCode, 1);
    const e = JSON.parse(out.stdout) as { code: number; msg: string; details: string };
    assert.equal(e.code, 7);
    assert.match(e.msg, /cni_agent_run_dir/);
    assert.ok(e.details.includes(other) && e.details.includes(agent.dirs.run), e.details);
  } finally {
    h.close();
    fs.rmSync(other, { recursive: true, force: true });
  }
});
