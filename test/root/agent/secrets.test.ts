// Least privilege and secrets, on a real agent process on temporary directories: the sockets the
// agent serves (log.sock, the CNI fast-path cni-shim.sock) and the kubeconfig it writes are
// owned by the agent's user and closed to everyone else (0600 in a dir others cannot write);
// and a distinctive service-account token never appears in anything the agent or the plugin
// prints or writes (stdout, stderr, relayed plugin logs, the plugin log file, CNI errors), even
// when the API echoes the Authorization header back in its error bodies. The kubeconfig is the
// one place the token is expected. Servers bind 127.0.0.1; no traffic leaves the machine.
import { after, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { ApiStandIn, startApiStandIn } from '../../support/kube-api';
import { sidecarPod } from '../../support/cni-fakes';
import { CniRun, runPlugin } from '../../support/cni-run';
import { tempDir } from '../../support/tmp';
import { until } from '../../support/until';
import { agentDirs, startAgentProcess } from '../../support/agent-proc';

const TOKEN = `icts-secret-${process.pid}-Zq9xT4vK`;

const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

function get(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      })
      .on('error', reject);
  });
}

/** Every file under dir, recursively, except those named. */
function filesUnder(dir: string, except: string[]): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p, except));
    else if (e.isFile() && !except.includes(p)) out.push(p);
  }
  return out;
}

function assertPrivate(p: string, what: string): void {
  const st = fs.statSync(p);
  assert.equal(st.mode & 0o777, 0o600, `${what} ${p}: mode ${(st.mode & 0o777).toString(8)}, want 600`);
  assert.equal(st.uid, process.getuid!(), `${what} is owned by the agent's user (uid ${process.getuid!()}${process.getuid!() === 0 ? ', root' : ''})`);
  const dir = fs.statSync(path.dirname(p));
  assert.equal(dir.mode & 0o022, 0, `${what}'s directory ${path.dirname(p)} is not writable by group or others (mode ${(dir.mode & 0o777).toString(8)})`);
}

test('agent + plugin: sockets and kubeconfig are 0600 for the agent user; the token appears nowhere but the kubeconfig', async (t) => {
  // An API that answers every call with 403 and echoes the Authorization header it got, so any
  // code that logs a response body would print the token.
  const api: ApiStandIn = await startApiStandIn(TOKEN);
  cleanups.push(() => api.close());
  api.failWith = { status: 403, body: (auth) => JSON.stringify({ kind: 'Status', message: `forbidden: you sent ${auth}`, reason: 'Forbidden' }) };
  const ca = Buffer.from(
    /certificate-authority-data: (\S+)/.exec(fs.readFileSync(path.join(api.runDir, 'istio-cni-kubeconfig'), 'utf8'))![1],
    'base64',
  ).toString();
  const port = new URL(api.url).port;

  // The repair controller lists pods at start: one more caller that meets the echoing 403.
  const a = await startAgentProcess(agentDirs({ api: { caPem: ca, token: TOKEN } }), {
    apiPort: Number(port),
    env: { REPAIR_ENABLED: 'true', REPAIR_NODE_NAME: 'node-1' },
  });
  const d = a.dirs;
  cleanups.push(() => fs.rmSync(d.root, { recursive: true, force: true }));
  cleanups.push(async () => void (await a.stop()));
  const kubeconfig = path.join(d.run, 'istio-cni-kubeconfig');
  await until('ready', async () => (await get(`http://${a.health}/readyz`)) === 200, 10_000);
  await until('the repair controller met the 403', () => api.requestLines.some((r) => r.startsWith('GET /api/v1/pods')), 10_000);

  // Modes and owners of everything the agent serves or writes with the token.
  assert.ok(fs.readFileSync(kubeconfig, 'utf8').includes(TOKEN), 'the kubeconfig carries the token (the one place it belongs)');
  const sockets = ['log.sock', 'cni-shim.sock'].map((s) => path.join(d.run, s)).filter((s) => fs.existsSync(s));
  assert.ok(sockets.includes(path.join(d.run, 'log.sock')), 'log.sock is served');
  for (const s of sockets) {
    assert.ok(fs.statSync(s).isSocket(), `${s} is a socket`);
    assertPrivate(s, path.basename(s));
  }
  assertPrivate(kubeconfig, 'kubeconfig');

  // The plugin, run as a runtime runs it against the agent's run dir: the API refuses (echoing the token).
  const netconf = JSON.stringify({
    cniVersion: '1.0.0',
    name: 'k8s-pod-network',
    type: 'istio-cni',
    plugin_log_level: 'debug',
    cni_agent_run_dir: d.run,
    ambient_enabled: false,
    exclude_namespaces: ['kube-system'],
    pod_namespace: 'istio-system',
    native_nftables: true,
    pod_lookup_attempts: 2,
    pod_lookup_interval_ms: 20,
    prevResult: { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: '/proc/self/ns/net' }], ips: [{ address: '10.0.0.2/24', interface: 0 }] },
  });
  api.addPod(sidecarPod({ name: 'web-1', namespace: 'shop' }));
  const runs: CniRun[] = [];
  for (const command of ['ADD', 'CHECK', 'DEL']) {
    runs.push(
      await runPlugin(
        {
          CNI_COMMAND: command,
          CNI_CONTAINERID: 'c1',
          CNI_NETNS: '/nonexistent/netns',
          CNI_IFNAME: 'eth0',
          CNI_PATH: '/opt/cni/bin',
          CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1',
        },
        netconf,
      ),
    );
  }
  // And once with a netns it may use, so the pod lookup really happens.
  const add = await runPlugin(
    {
      CNI_COMMAND: 'ADD',
      CNI_CONTAINERID: 'c2',
      CNI_NETNS: '/proc/1/ns/net',
      CNI_IFNAME: 'eth0',
      CNI_PATH: '/opt/cni/bin',
      CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1',
    },
    netconf,
  );
  runs.push(add);
  assert.notEqual(add.code, 0, `ADD fails when the API refuses: ${add.stdout}`);
  const echoed = api.requestLines.filter((r) => r.startsWith('GET /api/v1/namespaces/shop/pods/web-1')).length;

  // Let relayed plugin logs arrive, then stop the agent (SIGTERM cleanup logs too).
  await new Promise((r) => setTimeout(r, 500));
  assert.equal((await a.stop()).code, 0, a.out.join('\n'));

  const produced: { where: string; text: string }[] = [
    { where: 'agent output', text: a.out.join('\n') },
    ...runs.flatMap((r, i) => [
      { where: `plugin run ${i} stdout`, text: r.stdout },
      { where: `plugin run ${i} stderr`, text: r.stderr },
    ]),
    ...filesUnder(d.root, [kubeconfig, path.join(d.sa, 'token')]).map((f) => ({ where: f, text: fs.readFileSync(f, 'latin1') })),
  ];
  const lines = produced.reduce((n, p) => n + p.text.split('\n').length, 0);
  for (const p of produced) {
    assert.ok(!p.text.includes(TOKEN), `the token leaked into ${p.where}: ${p.text.split('\n').find((l) => l.includes(TOKEN))}`);
    assert.ok(!p.text.includes(Buffer.from(TOKEN).toString('base64')), `base64 of the token in ${p.where}`);
  }
  assert.ok(
    a.out.some((l) => l.includes('cni-plugin')),
    'plugin logs were relayed to the agent (so they were checked too)',
  );
  assert.ok(echoed >= 1, 'the plugin called the echoing API');
  t.diagnostic(
    `token grep: ${lines} lines in ${produced.length} outputs/files (agent, ${runs.length} plugin runs, run dir, net dir), ` +
      `${api.requestLines.length} API calls answered 403 with the token echoed; token found 0 times outside the kubeconfig`,
  );
});

test('pluginevent.sock (ambient CNI event server, in-process: the ambient agent process needs a node /proc and host netns): 0600 for the agent user; a hostile body is refused (400) on one line, nothing handled', async () => {
  const { startCniEventServer } = await import('../../../src/agent/ambient/cni-event-server');
  const root = tempDir(path.join(os.tmpdir(), 'icts-evsock-'));
  cleanups.push(() => fs.rmSync(root, { recursive: true, force: true }));
  const socketPath = path.join(root, 'run', 'pluginevent.sock');
  const logged: string[] = [];
  const rec = (m: string, f?: object) => {
    logged.push(`${m} ${JSON.stringify(f ?? {})}`);
  };
  let handled = 0;
  const server = await startCniEventServer(
    socketPath,
    async () => {
      handled++;
    },
    { debug: rec, info: rec, warn: rec, error: rec },
  );
  cleanups.push(() => server.close());
  assertPrivate(socketPath, 'pluginevent.sock');
  assert.equal(fs.statSync(path.dirname(socketPath)).mode & 0o007, 0, 'the run dir is closed to others');
  const post = (body: string) =>
    new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = http.request({ socketPath, path: '/cmdadd', method: 'POST' }, (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      });
      req.on('error', reject);
      req.end(body);
    });
  const r = await post(JSON.stringify({ Netns: `/../${TOKEN}\u2028x`, PodName: 'p', PodNamespace: 'n', IPs: [] }));
  assert.equal(r.status, 400, r.text);
  assert.equal(r.text.trimEnd().split(/[\n\r\u2028\u2029]/).length, 1, `one line: ${JSON.stringify(r.text)}`);
  assert.equal(handled, 0, 'nothing handled');
});
