// The agent and `install --once` started as real processes on temporary directories. Servers bind
// to 127.0.0.1 on free ports; no traffic leaves the machine.
import { after, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { AGENT_BIN as BIN, AgentDirs as Dirs, PRIMARY_LIST as LIST, agentArgs, agentDirs, startAgentProcess } from '../../support/agent-proc';
import { httpGet } from '../../support/http-get';
import { tempDir } from '../../support/tmp';
import { until } from '../../support/until';

const created: string[] = [];
after(() => {
  for (const root of created) fs.rmSync(root, { recursive: true, force: true });
});

/** The agent's dirs without a primary CNI config (the tests write it when they need it). */
function dirs(): Dirs {
  const root = tempDir(path.join(os.tmpdir(), 'icts-agent-'));
  created.push(root);
  return agentDirs({ base: root, primary: false });
}

const dirArgs = (d: Dirs): string[] => agentArgs(d);

const baseEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: '6443' };

function hasIstio(file: string): boolean {
  try {
    return (JSON.parse(fs.readFileSync(file, 'utf8')).plugins as { type: string }[]).some((p) => p.type === 'istio-cni');
  } catch {
    return false;
  }
}

function postLog(socketPath: string, lines: object[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path: '/log', method: 'POST' }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(JSON.stringify(lines.map((l) => JSON.stringify(l))));
  });
}

test('agent: not ready without a primary config; installs within 2 s of it appearing; metrics, plugin logs, re-install, SIGTERM cleanup', async () => {
  const d = dirs();
  const a = await startAgentProcess(d, { metrics: true });
  try {
    assert.equal((await httpGet(`http://${a.health}/healthz`)).status, 200);
    assert.equal((await httpGet(`http://${a.health}/readyz`)).status, 503, 'chained: waits for the primary CNI');

    const conf = path.join(d.net, '10-k8s.conflist');
    fs.writeFileSync(conf, LIST);
    const t0 = Date.now();
    await until('ready', async () => (await httpGet(`http://${a.health}/readyz`)).status === 200, 2000);
    assert.ok(Date.now() - t0 < 2000, `ready after ${Date.now() - t0} ms`);
    assert.ok(hasIstio(conf));
    assert.ok(fs.existsSync(path.join(d.bin, 'istio-cni')));
    const kubeconfig = path.join(d.run, 'istio-cni-kubeconfig');
    assert.equal(fs.statSync(kubeconfig).mode & 0o777, 0o600);

    const metrics = await httpGet(`http://${a.metrics}/metrics`);
    assert.match(metrics.body, /^istio_cni_install_ready 1$/m);
    assert.match(metrics.body, /^istio_cni_installs_total\{result="SUCCESS"\} [1-9]/m);

    const sock = path.join(d.run, 'log.sock');
    assert.equal(fs.statSync(sock).mode & 0o777, 0o600);
    assert.equal(await postLog(sock, [{ level: 'info', time: '2024-05-01T10:00:00Z', msg: 'hello from ADD', pod: 'web-1', namespace: 'shop' }]), 200);
    await until('relayed plugin log', () => a.out.some((l) => l.includes('\tcni-plugin\thello from ADD\tnamespace=shop pod=web-1')), 2000);

    fs.rmSync(path.join(d.bin, 'istio-cni'));
    const t1 = Date.now();
    await until('binary re-installed', () => fs.existsSync(path.join(d.bin, 'istio-cni')), 2000);
    assert.ok(Date.now() - t1 < 2000);

    await until('ready again', async () => (await httpGet(`http://${a.health}/readyz`)).status === 200, 3000);
    fs.writeFileSync(path.join(d.sa, 'token'), 'token-two');
    await until('kubeconfig follows the rotated token', () => fs.readFileSync(kubeconfig, 'utf8').includes('token: token-two'), 2000);
  } finally {
    a.proc.kill('SIGTERM');
  }
  const { code } = await a.exit;
  assert.equal(code, 0, a.out.join('\n'));
  const after = JSON.parse(fs.readFileSync(path.join(d.net, '10-k8s.conflist'), 'utf8'));
  assert.deepEqual(
    after.plugins.map((p: { type: string }) => p.type),
    ['ptp', 'portmap'],
    'our entry removed, the rest kept',
  );
  assert.equal(fs.existsSync(path.join(d.bin, 'istio-cni')), false);
  assert.equal(fs.existsSync(path.join(d.run, 'istio-cni-kubeconfig')), false);
  assert.equal(fs.existsSync(path.join(d.run, 'log.sock')), false);
});

test('agent: a primary CNI that keeps rewriting its config never exposes a torn file, and our entry is back after the storm', async () => {
  const d = dirs();
  const conf = path.join(d.net, '10-k8s.conflist');
  fs.writeFileSync(conf, LIST);
  const a = await startAgentProcess(d);
  try {
    await until('installed', () => hasIstio(conf), 2000);
    let reads = 0;
    let torn = 0;
    let stop = false;
    const reader = (async () => {
      while (!stop) {
        try {
          JSON.parse(fs.readFileSync(conf, 'utf8'));
        } catch {
          torn++; // unparsable, or missing: neither may ever be seen
        }
        reads++;
        if (reads % 50 === 0) await new Promise((r) => setImmediate(r));
      }
    })();
    // The "primary CNI": rewrites its config (atomically, as CNI agents do) 150 times over ~3 s.
    for (let i = 0; i < 150; i++) {
      const tmp = `${conf}.primary-${i}`;
      fs.writeFileSync(tmp, LIST);
      fs.renameSync(tmp, conf);
      await new Promise((r) => setTimeout(r, 20));
    }
    stop = true;
    await reader;
    assert.ok(reads > 1000, `reader polled ${reads} times`);
    assert.equal(torn, 0, 'no partial, unparsable or missing file observed');
    await until('our entry present after the storm', () => hasIstio(conf), 3000);
    const rewrites = a.out.filter((l) => l.includes('wrote CNI config')).length;
    assert.ok(rewrites >= 3, `the agent re-inserted itself during the storm (${rewrites} writes)`);
  } finally {
    a.proc.kill('SIGTERM');
  }
  assert.equal((await a.exit).code, 0);
});

test('agent: a malformed variable stops start-up naming it (exit 2), nothing installed', () => {
  const d = dirs();
  fs.writeFileSync(path.join(d.net, '10-k8s.conflist'), LIST);
  const r = spawnSync(process.execPath, [BIN, 'agent', ...dirArgs(d)], { env: { ...baseEnv, CHAINED_CNI_PLUGIN: 'sometimes' }, encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /invalid CHAINED_CNI_PLUGIN "sometimes": expected true or false/);
  assert.equal(fs.readFileSync(path.join(d.net, '10-k8s.conflist'), 'utf8'), LIST);
  assert.deepEqual(fs.readdirSync(d.bin), []);
});

test('agent --help lists the variables with their defaults', () => {
  const r = spawnSync(process.execPath, [BIN, 'agent', '--help'], { env: baseEnv, encoding: 'utf8' });
  assert.equal(r.status, 0);
  for (const s of ['CNI_BIN_DIR', 'SERVICE_ACCOUNT_DIR', 'PLUGIN_LOG_LEVEL', 'MOUNTED_CNI_NET_DIR', 'KUBECONFIG_MODE', '"/host/opt/cni/bin"', '"15014"']) {
    assert.ok(r.stdout.includes(s), s);
  }
});

test('install --once: one pass then exit 0 with what it wrote', () => {
  const d = dirs();
  fs.writeFileSync(path.join(d.net, '10-bridge.conf'), JSON.stringify({ cniVersion: '0.4.0', name: 'b', type: 'bridge' }));
  const r = spawnSync(process.execPath, [BIN, 'install', '--once', ...dirArgs(d)], { env: baseEnv, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), {
    cniConfigFile: path.join(d.net, '10-bridge.conflist'),
    kubeconfigFile: path.join(d.run, 'istio-cni-kubeconfig'),
    binaries: ['istio-cni'],
  });
  assert.deepEqual(fs.readdirSync(d.net), ['10-bridge.conflist']);
  assert.ok(hasIstio(path.join(d.net, '10-bridge.conflist')));
});

test('install --once: failures exit 1 with one line naming the step', () => {
  const d = dirs();
  fs.writeFileSync(path.join(d.net, '10-k8s.conflist'), LIST);
  const noHost = spawnSync(process.execPath, [BIN, 'install', '--once', ...dirArgs(d)], { env: { PATH: baseEnv.PATH }, encoding: 'utf8' });
  assert.equal(noHost.status, 1);
  assert.match(noHost.stderr, /install failed \(CREATE_KUBECONFIG_FAILURE\): write kubeconfig: KUBERNETES_SERVICE_HOST not set/);
  const e = dirs();
  const wait = spawnSync(process.execPath, [BIN, 'install', '--once', '--timeout', '0.3', ...dirArgs(e)], { env: baseEnv, encoding: 'utf8' });
  assert.equal(wait.status, 1);
  assert.match(wait.stderr, /install stopped: timed out after 0.3s/);
  assert.deepEqual(fs.readdirSync(e.net), []);
});
