// `install-cni`, as Istio's chart runs it (command: ["install-cni"], args: --log_output_level,
// --log_as_json), as a real process on temporary directories; and log.sock under hostile
// relayed lines: the agent stays up and counts what it dropped.
import { after, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as http from 'node:http';
import * as path from 'node:path';
import { AgentDirs, AgentProc, INSTALL_CNI_BIN, agentDirs, startAgentProcess } from '../../support/agent-proc';
import { until } from '../../support/until';
import { watchChild } from '../../support/child-lines';
import { freePort, httpGet } from '../../support/http-get';

const running: AgentProc[] = [];
after(async () => {
  for (const a of running) await a.stop();
});

const ISTIO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

/**
 * Every flag Istio 1.28.1's install-cni accepts (cni/pkg/cmd/root.go's registered parameters,
 * pkg/log Options.AttachCobraFlags, pkg/ctrlz Options.AttachCobraFlags), each with a value that
 * keeps this test's agent on its temporary directories.
 */
function istioFlags(d: AgentDirs): string[] {
  const table: [string, string | undefined][] = [
    // root.go
    ['cni-conf-name', ''],
    ['chained-cni-plugin', 'true'],
    ['cni-network-config', ''],
    ['istio-owned-cni-config-filename', ''],
    ['istio-owned-cni-config', 'false'],
    ['log-level', 'warn'],
    ['mounted-cni-net-dir', d.net],
    ['cni-agent-run-dir', d.run],
    ['cni-network-config-file', ''],
    ['kubeconfig-mode', '0600'],
    ['kube-ca-file', ''],
    ['skip-tls-verify', 'false'],
    ['monitoring-port', '0'],
    ['ztunnel-uds-address', '/var/run/ztunnel/ztunnel.sock'],
    ['ambient-enabled', 'false'],
    ['repair-enabled', 'false'],
    ['repair-delete-pods', 'false'],
    ['repair-label-pods', 'false'],
    ['repair-broken-pod-label-key', 'cni.istio.io/uninitialized'],
    ['repair-broken-pod-label-value', 'true'],
    ['repair-node-name', ''],
    ['repair-sidecar-annotation', 'sidecar.istio.io/status'],
    ['repair-init-container-name', 'istio-validation'],
    ['repair-init-container-termination-message', ''],
    ['repair-init-container-exit-code', '126'],
    ['repair-label-selectors', ''],
    ['repair-field-selectors', ''],
    // pkg/log
    ['log_output_level', 'default:info,cni-agent:debug'],
    ['log_as_json', undefined],
    ['log_caller', 'cni-agent'],
    ['log_stacktrace_level', 'default:none'],
    ['log_target', 'stdout'],
    // pkg/ctrlz
    ['ctrlz_port', '9876'],
    ['ctrlz_address', 'localhost'],
  ];
  return table.map(([f, v]) => (v === undefined ? `--${f}` : `--${f}=${v}`));
}

function run(args: string[]): Promise<{ code: number | null; out: string[] }> {
  const proc = spawn(process.execPath, [INSTALL_CNI_BIN, ...args], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const c = watchChild(proc);
  return c.exited.then((s) => ({ code: s.code, out: c.out }));
}

test("install-cni with the chart's args (--log_output_level=default:info,cni-agent:debug --log_as_json): version line first, JSON lines with Istio's keys", async () => {
  const a = await startAgentProcess(agentDirs(), { installCni: true, args: ['--log_output_level=default:info,cni-agent:debug', '--log_as_json'] });
  running.push(a);
  const stdout = a.out.filter((l) => !l.startsWith('STDERR '));
  const lines = stdout.map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.deepEqual(Object.keys(lines[0]).slice(0, 4), ['level', 'time', 'scope', 'msg']);
  assert.match(String(lines[0].msg), /^CNI version: 0\.1\.0-[0-9a-f]{40}-(Clean|Modified)$|^CNI version: 0\.1\.0-unknown-unknown$/);
  assert.equal(lines[0].scope, 'cni-agent');
  for (const l of lines) {
    assert.deepEqual(Object.keys(l).slice(0, 4), ['level', 'time', 'scope', 'msg'], JSON.stringify(l));
    assert.match(String(l.time), ISTIO_TIME);
  }
  assert.ok(lines.some((l) => l.msg === 'CNI logging level: debug'));
  assert.ok(lines.some((l) => l.msg === 'CNI node agent configuration' && l.pluginLogLevel === 'info'));
  assert.equal(a.out.filter((l) => l.startsWith('STDERR ')).length, 0, a.out.join('\n'));
});

test("install-cni accepts every flag of Istio 1.28.1's install-cni; `agent` takes the same", async () => {
  const d = agentDirs();
  const flags = istioFlags(d);
  const rest = ['--cni-bin-dir', d.bin, '--cni-bin-source-dir', d.src, '--service-account-dir', d.sa];
  const a = await startAgentProcess(d, { installCni: true, args: [...flags, ...rest] });
  running.push(a);
  const msgs = a.out.map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.ok(
    msgs.every((m) => m.scope !== 'cni-agent' || typeof m.caller === 'string'),
    '--log_caller cni-agent honoured',
  );
  await a.stop();
  const b = await startAgentProcess(agentDirs(), { args: flags.filter((f) => !/^--(mounted-cni-net-dir|cni-agent-run-dir)=/.test(f)) });
  running.push(b);
  await until('the fast-path server line', () => b.out.some((l) => l.includes('"msg":"CNI fast-path server listening"')));
});

test('install-cni: an unknown flag or a malformed logging value exits 2 naming it', async () => {
  for (const [args, re] of [
    [['--log_rotate=/tmp/x'], /^STDERR install-cni: Unknown argument: log_rotate$/],
    [['--bogus-flag=1'], /^STDERR install-cni: Unknown argument: bogus-flag$/],
    [['--log_output_level=cni-agent:verbose'], /^STDERR install-cni: invalid --log_output_level "cni-agent:verbose": invalid output level "verbose"/],
    [['--log_as_json=maybe'], /^STDERR install-cni: invalid --log_as_json "maybe": expected true or false$/],
    [['--ctrlz_port=99999'], /^STDERR install-cni: invalid --ctrlz_port "99999"/],
  ] as const) {
    const r = await run([...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.out.join('\n')}`);
    assert.equal(r.out.length, 1, r.out.join('\n'));
    assert.match(r.out[0], re);
  }
  const v = await run(['version']);
  assert.equal(v.code, 0);
  assert.match(v.out[0], /^0\.1\.0-/);
});

function post(socketPath: string, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path: '/log', method: 'POST', headers: { 'Content-Type': 'application/json' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('log.sock: a deep-nested and an oversized relayed field leave the agent alive; the lines are counted as dropped', async () => {
  const d = agentDirs();
  const a = await startAgentProcess(d, { installCni: true, args: ['--monitoring-port', String(await freePort()), '--log_as_json'] });
  running.push(a);
  // The agent is serving its fast path before it has necessarily logged every server: wait for both lines.
  const addressOf = (msg: string) => (a.out.map((l) => JSON.parse(l) as Record<string, string>).find((m) => m.msg === msg) ?? {}).address;
  const metricsAt = await until('the metrics server line', () => addressOf('metrics server listening'));
  const healthAt = await until('the health server line', () => addressOf('health server listening'));
  const sock = path.join(d.run, 'log.sock');
  const entry = (extra: string) => `{"level":"info","time":"2024-05-01T10:00:00Z","msg":"relayed"${extra}}`;
  // The reproduction: 200,000 levels (400 KB), then one 17 levels deep, then 5,000 characters.
  const lines = [
    entry(`,"f":${'['.repeat(200_000)}1${']'.repeat(200_000)}`),
    entry(`,"f":${'['.repeat(17)}1${']'.repeat(17)}`),
    entry(`,"f":"${'x'.repeat(5000)}"`),
    entry(',"pod":"web-1"'),
  ];
  assert.equal(await post(sock, JSON.stringify(lines)), 200);
  await until('the good line relayed', () => a.out.some((l) => l.includes('"scope":"cni-plugin"') && l.includes('"pod":"web-1"')));
  const metrics = (await httpGet(`http://${metricsAt}/metrics`)).body;
  assert.match(metrics, /^istio_cni_ts_log_lines_dropped_total\{reason="too_large"\} 2$/m);
  assert.match(metrics, /^istio_cni_ts_log_lines_dropped_total\{reason="too_deep"\} 1$/m);
  assert.equal((await httpGet(`http://${healthAt}/healthz`)).status, 200);
  assert.equal(a.proc.exitCode, null, 'agent alive');
  assert.equal(a.out.filter((l) => l.includes('"scope":"cni-plugin"')).length, 1, 'only the good line relayed');
});
