// The plugin's logs: the JSON line format, levels per sink, the rotated istio-cni.log, the POST
// to the agent's log.sock (with the agent's own relay code and with the real agent process), and
// the kubeconfig token kept out of every log. Sockets and files live in temp dirs.
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { ScopeLevels } from '../../src/log/levels';
import { agentLogger } from '../../src/log/winston-backend';
import { startLogServer } from '../../src/agent/logserver';
import { PluginLogger, RollingFile, backupStamp, encodeEntry, istioTimestamp, postLogLines } from '../../src/log';
import { ApiStandIn, startApiStandIn } from '../support/kube-api';
import { logLines, runPlugin } from '../support/cni-run';
import { tempDir } from '../support/tmp';
import { until } from '../support/until';
import { AgentProc, agentDirs, startAgentProcess } from '../support/agent-proc';

const tmp = (tag: string) => tempDir(path.join(os.tmpdir(), `icts-${tag}-`));

function memoryLogger(level: 'debug' | 'info' | 'warn' | 'error' = 'debug') {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc: string, cb: () => void) {
      lines.push(
        ...String(chunk)
          .split('\n')
          .filter((l) => l !== ''),
      );
      cb();
    },
  }) as NodeJS.WritableStream;
  return { lines, log: agentLogger({ levels: new ScopeLevels(level), targets: [stream] }).withScope('cni-agent') };
}

describe('log line format', () => {
  test("Istio's JSON layout: level, time (UTC, microseconds), msg, then fields", () => {
    const line = encodeEntry('info', new Date(Date.UTC(2024, 4, 1, 10, 0, 0, 123)), 'pod redirected', {
      pod: 'shop/web-1',
      skip: undefined,
      msg: 'x',
      err: new Error('boom'),
    });
    assert.equal(line, '{"level":"info","time":"2024-05-01T10:00:00.123000Z","msg":"pod redirected","pod":"shop/web-1","field.msg":"x","err":"boom"}');
    assert.equal(istioTimestamp(new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 6))), '2024-01-02T03:04:05.006000Z');
  });

  test('a cycle in the fields does not lose the entry', () => {
    const o: Record<string, unknown> = {};
    o.self = o;
    assert.match(encodeEntry('warn', new Date(0), 'still here', { o }), /"msg":"still here"/);
  });
});

describe('PluginLogger', () => {
  test('stderr at plugin_log_level; istio-cni.log never below info; entries before configure() reach the file too', () => {
    const dir = tmp('log');
    try {
      const err: string[] = [];
      const l = new PluginLogger({ stderr: (s) => err.push(s) });
      l.debug('early debug');
      l.info('early info');
      l.configure({ level: 'debug', agentRunDir: dir });
      l.debug('late debug');
      l.warn('late warn', { pod: 'shop/web-1' });
      const stderrMsgs = err.map((s) => JSON.parse(s).msg);
      assert.deepEqual(stderrMsgs, ['early info', 'late debug', 'late warn'], 'debug before configure() is below the default info');
      const file = fs.readFileSync(path.join(dir, 'istio-cni.log'), 'utf8');
      assert.deepEqual(
        logLines(file).map((e) => e.msg),
        ['early info', 'late warn'],
      );
      assert.equal(fs.statSync(path.join(dir, 'istio-cni.log')).mode & 0o777, 0o600);

      const err2: string[] = [];
      const quiet = new PluginLogger({ stderr: (s) => err2.push(s) });
      quiet.configure({ level: 'error', agentRunDir: dir });
      quiet.info('not shown');
      quiet.error('shown');
      assert.deepEqual(
        err2.map((s) => JSON.parse(s).msg),
        ['shown'],
      );
      assert.doesNotMatch(fs.readFileSync(path.join(dir, 'istio-cni.log'), 'utf8'), /not shown/);

      const none = new PluginLogger({ stderr: (s) => err2.push(s) });
      none.configure({ level: 'none', agentRunDir: dir });
      none.error('silenced');
      assert.doesNotMatch(err2.join(''), /silenced/);
      assert.doesNotMatch(fs.readFileSync(path.join(dir, 'istio-cni.log'), 'utf8'), /silenced/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('no run dir: nothing is created on the host, stderr still works', () => {
    const dir = path.join(tmp('log'), 'absent');
    const err: string[] = [];
    const l = new PluginLogger({ stderr: (s) => err.push(s) });
    l.configure({ level: 'info', agentRunDir: dir });
    l.info('hello');
    assert.equal(fs.existsSync(dir), false);
    assert.equal(err.length, 1);
    fs.rmSync(path.dirname(dir), { recursive: true, force: true });
  });

  test('a registered secret is replaced in every sink, raw or JSON-escaped', async () => {
    const dir = tmp('log');
    const { lines, log } = memoryLogger();
    const server = await startLogServer(path.join(dir, 'log.sock'), log.withScope('cni-plugin'), log);
    try {
      const secret = 'tok"en-with\\quote-1234567';
      const err: string[] = [];
      const l = new PluginLogger({ stderr: (s) => err.push(s) });
      l.configure({ level: 'debug', agentRunDir: dir });
      l.redact(secret);
      l.error(`echo ${secret}`, { header: `Bearer ${secret}` });
      assert.equal(await l.flush(), undefined);
      await until('relayed', () => lines.some((x) => x.includes('echo [redacted]')), 3000);
      const all = [err.join(''), fs.readFileSync(path.join(dir, 'istio-cni.log'), 'utf8'), lines.join('\n')];
      for (const text of all) {
        assert.ok(!text.includes('tok"en') && !text.includes('tok\\"en') && !text.includes('1234567'), text);
        assert.match(text, /\[redacted\]/);
      }
    } finally {
      await server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('RollingFile (lumberjack semantics)', () => {
  test('rotates before the size is exceeded, names the backup by UTC time, keeps one backup, drops old ones', () => {
    const dir = tmp('roll');
    try {
      let now = Date.UTC(2024, 4, 1, 10, 0, 0, 0);
      const file = path.join(dir, 'istio-cni.log');
      const ancient = path.join(dir, `istio-cni-${backupStamp(new Date(now - 3 * 24 * 3600e3))}.log`);
      fs.writeFileSync(ancient, 'old\n');
      fs.writeFileSync(path.join(dir, 'istio-cni-notes.log'), 'not a backup\n');
      const r = new RollingFile(file, { maxBytes: 100, backups: 1, maxAgeMs: 2 * 24 * 3600e3, now: () => new Date(now) });
      const line = `${'x'.repeat(39)}\n`; // 40 bytes
      r.write(line);
      r.write(line);
      assert.equal(fs.statSync(file).size, 80);
      r.write(line); // 120 > 100: rotate first
      const first = path.join(dir, 'istio-cni-2024-05-01T10-00-00.000.log');
      assert.equal(fs.statSync(first).size, 80);
      assert.equal(fs.statSync(file).size, 40);
      assert.equal(fs.existsSync(ancient), false, 'older than two days: removed');
      assert.equal(fs.readFileSync(path.join(dir, 'istio-cni-notes.log'), 'utf8'), 'not a backup\n', 'unrelated file kept');
      now += 1500;
      r.write(line);
      r.write(line); // rotate again
      const second = path.join(dir, 'istio-cni-2024-05-01T10-00-01.500.log');
      assert.ok(fs.existsSync(second));
      assert.equal(fs.existsSync(first), false, 'only one backup is kept');
      r.close();
      assert.deepEqual(fs.readdirSync(dir).sort(), ['istio-cni-2024-05-01T10-00-01.500.log', 'istio-cni-notes.log', 'istio-cni.log']);
      assert.throws(() => new RollingFile(file, { maxBytes: 10, backups: 1, maxAgeMs: 1 }).write('x'.repeat(11)), /larger than the maximum/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('two writers: when one has rotated, the other follows the new file instead of rotating it away', () => {
    const dir = tmp('roll');
    try {
      const file = path.join(dir, 'istio-cni.log');
      let now = Date.UTC(2024, 4, 1, 10, 0, 0, 0);
      const opts = { maxBytes: 100, backups: 1, maxAgeMs: 1e12, now: () => new Date(now) };
      const a = new RollingFile(file, opts);
      const b = new RollingFile(file, opts);
      a.write(`${'a'.repeat(59)}\n`);
      b.write(`${'b'.repeat(29)}\n`); // 90 bytes, both hold the same file
      a.write(`${'a'.repeat(19)}\n`); // a rotates: backup 90 bytes, new file 20
      now += 10;
      b.write(`${'b'.repeat(19)}\n`); // b sees the new file has room: no second rotation
      assert.equal(fs.readFileSync(file, 'utf8'), `${'a'.repeat(19)}\n${'b'.repeat(19)}\n`);
      const backups = fs.readdirSync(dir).filter((n) => n !== 'istio-cni.log');
      assert.equal(backups.length, 1);
      assert.equal(fs.statSync(path.join(dir, backups[0])).size, 90);
      a.close();
      b.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('POST to log.sock', () => {
  test('an agent that never answers costs one second at most', async () => {
    const dir = tmp('uds');
    const sock = path.join(dir, 'log.sock');
    const held: net.Socket[] = [];
    const server = net.createServer((c) => held.push(c)); // accepts, reads nothing, answers nothing
    await new Promise<void>((r) => server.listen(sock, r));
    try {
      const t0 = Date.now();
      const err = await postLogLines(sock, ['{"level":"info"}\n']);
      const ms = Date.now() - t0;
      assert.match(String(err), /within 1000 ms/);
      assert.ok(ms >= 950 && ms < 3000, `${ms} ms`); // upper bound loose: timers run late on a loaded machine
      assert.match(String(await postLogLines(path.join(dir, 'nothing.sock'), ['x'])), /ENOENT/);
    } finally {
      for (const c of held) c.destroy();
      await new Promise((r) => server.close(r));
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The binary.

const conf = (runDir: string, over: Record<string, unknown> = {}) =>
  JSON.stringify({
    cniVersion: '1.0.0',
    name: 'k8s-pod-network',
    type: 'istio-cni',
    cni_agent_run_dir: runDir,
    exclude_namespaces: ['kube-system'],
    pod_namespace: 'istio-system',
    ...over,
  });
const env = (command: string, args: string, netns = '/var/run/netns/icts-no-such-netns') => ({
  CNI_COMMAND: command,
  CNI_CONTAINERID: 'c0ffee',
  CNI_NETNS: netns,
  CNI_IFNAME: 'eth0',
  CNI_PATH: '/opt/cni/bin',
  CNI_ARGS: args,
});
const EXCLUDED = 'IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-5d78c';

describe('the binary', () => {
  let api: ApiStandIn;
  before(async () => {
    api = await startApiStandIn();
  });
  after(async () => api?.close());

  test('plugin_log_level is honoured on stderr and in istio-cni.log; the agent relay gets the same lines', async () => {
    const agentOut = memoryLogger('debug');
    const server = await startLogServer(path.join(api.runDir, 'log.sock'), agentOut.log.withScope('cni-plugin'), agentOut.log);
    const logFile = path.join(api.runDir, 'istio-cni.log');
    try {
      fs.rmSync(logFile, { force: true });
      api.addPod({ metadata: { name: 'plain', namespace: 'shop' }, spec: { containers: [{ name: 'app' }] } });
      let r = await runPlugin(env('ADD', 'K8S_POD_NAMESPACE=shop;K8S_POD_NAME=plain'), conf(api.runDir, { plugin_log_level: 'debug' }));
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const stderr = logLines(r.stderr);
      assert.ok(
        stderr.every((e) => Object.keys(e).slice(0, 3).join() === 'level,time,msg'),
        r.stderr,
      );
      assert.ok(
        stderr.some((e) => e.level === 'info' && /no sidecar capture/.test(String(e.msg)) && e.pod === 'shop/plain'),
        r.stderr,
      );
      const relayed = await until('relayed', () => agentOut.lines.filter((l) => l.includes('\tcni-plugin\t')).length >= stderr.length && agentOut.lines, 3000);
      // Every line the plugin printed reaches the agent, with the plugin's own time.
      for (const e of stderr) {
        assert.ok(
          relayed.some((l) => l.startsWith(`${e.time}\t${e.level}\tcni-plugin\t${e.msg}`)),
          `${JSON.stringify(e)} in\n${relayed.join('\n')}`,
        );
      }
      const fileLevels = logLines(fs.readFileSync(logFile, 'utf8')).map((e) => e.level);
      assert.ok(fileLevels.length > 0 && !fileLevels.includes('debug'), 'the file is never below info');

      const before = fs.readFileSync(logFile, 'utf8');
      const seen = agentOut.lines.length;
      r = await runPlugin(env('ADD', 'K8S_POD_NAMESPACE=shop;K8S_POD_NAME=plain'), conf(api.runDir, { plugin_log_level: 'error' }));
      assert.equal(r.code, 0);
      assert.equal(r.stderr, '', 'nothing at error level to say');
      assert.equal(fs.readFileSync(logFile, 'utf8'), before);
      r = await runPlugin(env('ADD', 'K8S_POD_NAMESPACE=shop;K8S_POD_NAME=ghost'), conf(api.runDir, { plugin_log_level: 'error', pod_lookup_attempts: 1 }));
      assert.equal(JSON.parse(r.stdout).code, 102);
      assert.deepEqual(
        logLines(r.stderr).map((e) => e.level),
        ['error'],
      );
      await until('error relayed', () => agentOut.lines.slice(seen).some((l) => /\terror\tcni-plugin\tADD failed/.test(l)), 3000);
      assert.match(fs.readFileSync(logFile, 'utf8').slice(before.length), /"level":"error"/);
    } finally {
      await server.close();
    }
  });

  test('the kubeconfig token never appears in stdout, stderr, istio-cni.log or the relayed logs, even when the API echoes it', async () => {
    const agentOut = memoryLogger('debug');
    const server = await startLogServer(path.join(api.runDir, 'log.sock'), agentOut.log.withScope('cni-plugin'), agentOut.log);
    api.failWith = { status: 403, body: (auth) => JSON.stringify({ kind: 'Status', message: `forbidden for ${auth}` }) };
    try {
      const r = await runPlugin(
        env('ADD', 'K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1'),
        conf(api.runDir, { plugin_log_level: 'debug', pod_lookup_attempts: 2, pod_lookup_interval_ms: 10 }),
      );
      assert.equal(JSON.parse(r.stdout).code, 102);
      await until('relayed', () => agentOut.lines.some((l) => l.includes('ADD failed')), 3000);
      const texts = {
        stdout: r.stdout,
        stderr: r.stderr,
        file: fs.readFileSync(path.join(api.runDir, 'istio-cni.log'), 'utf8'),
        agent: agentOut.lines.join('\n'),
      };
      for (const [where, text] of Object.entries(texts)) {
        assert.ok(!text.includes(api.token), `token in ${where}: ${text}`);
        assert.match(text, /forbidden for Bearer \[redacted\]/, `${where} shows the (scrubbed) API message`);
      }
    } finally {
      api.failWith = undefined;
      await server.close();
    }
  });

  test('istio-cni.log is rotated at 10 MB with one backup kept', async () => {
    const dir = tmp('rot');
    try {
      const logFile = path.join(dir, 'istio-cni.log');
      fs.writeFileSync(logFile, '');
      fs.truncateSync(logFile, 10 * 1024 * 1024 - 20); // sparse: almost full
      fs.writeFileSync(path.join(dir, 'istio-cni-2020-01-01T00-00-00.000.log'), 'old backup\n');
      const r = await runPlugin(env('ADD', EXCLUDED), conf(dir));
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const backups = fs.readdirSync(dir).filter((n) => /^istio-cni-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}\.log$/.test(n));
      assert.equal(backups.length, 1, backups.join());
      assert.notEqual(backups[0], 'istio-cni-2020-01-01T00-00-00.000.log');
      assert.equal(fs.statSync(path.join(dir, backups[0])).size, 10 * 1024 * 1024 - 20);
      assert.match(fs.readFileSync(logFile, 'utf8'), /^\{"level":"info".*passed through \(excluded-namespace\)/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('an agent that is gone (stale log.sock) or hangs does not fail the plugin nor hold it past one second', async () => {
    const dir = tmp('stale');
    try {
      const sock = path.join(dir, 'log.sock');
      const k = spawnSync(process.execPath, [
        '-e',
        `require('net').createServer().listen(${JSON.stringify(sock)}, () => process.kill(process.pid, 'SIGKILL'))`,
      ]);
      assert.equal(k.signal, 'SIGKILL');
      let r = await runPlugin(env('ADD', EXCLUDED), conf(dir));
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(JSON.parse(r.stdout).cniVersion, '1.0.0');
      const baselineMs = r.ms;
      fs.rmSync(sock);
      const held: net.Socket[] = [];
      const hung = net.createServer((c) => held.push(c));
      await new Promise<void>((res) => hung.listen(sock, res));
      try {
        r = await runPlugin(env('ADD', EXCLUDED), conf(dir));
        assert.equal(r.code, 0);
        assert.ok(r.stdout.startsWith('{'));
        // Against the run just before (same load): one second of waiting plus slack, not a hang.
        assert.ok(r.ms < baselineMs + 1000 + 2000, `exited after ${r.ms} ms (the run without a hung agent: ${baselineMs} ms)`);
      } finally {
        for (const c of held) c.destroy();
        await new Promise((res) => hung.close(res));
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

// The real node agent process (`istio-cni-ts agent`) and the real plugin process, talking over
// log.sock the way they do on a node.
test("agent process + plugin process: the plugin's log lines appear in the agent's output on the cni-plugin scope", async () => {
  const d = agentDirs({ base: tmp('agent'), api: { caPem: 'CA', token: 'agent-token' }, primary: false });
  let agent: AgentProc | undefined;
  try {
    agent = await startAgentProcess(d);
    const { out } = agent;

    const r = await runPlugin(env('ADD', EXCLUDED), conf(d.run));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const [line] = logLines(r.stderr).filter((e) => /passed through/.test(String(e.msg)));
    assert.ok(line, r.stderr);
    const relayed = await until('relayed line', () => out.find((l) => l.includes('\tcni-plugin\tADD: pod passed through (excluded-namespace)')), 3000);
    assert.ok(relayed.startsWith(`${line.time}\tinfo\tcni-plugin\t`), relayed);
    assert.match(relayed, /\tcontainerId=c0ffee .*pod=kube-system\/coredns-5d78c/);
    assert.match(fs.readFileSync(path.join(d.run, 'istio-cni.log'), 'utf8'), /passed through \(excluded-namespace\)/);
  } finally {
    await agent?.stop();
    fs.rmSync(d.root, { recursive: true, force: true });
  }
});
