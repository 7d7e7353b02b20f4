// `npm run demo`: the CNI plugin's sidecar flow on one machine, no cluster and no network access.
//
//   1. a local Kubernetes API stand-in (HTTPS with a CA generated now, bearer token required)
//      serving one sidecar-injected pod, and the kubeconfig install-cni would write for it;
//   2. a throwaway pod network namespace wired by a veth pair to a "world" namespace holding a
//      web server; a stand-in for Envoy listening on 15001 inside the pod;
//   3. the plugin executed exactly as a container runtime executes a chained plugin: found by
//      its type in CNI_PATH, CNI_* variables in the environment, the network config with the
//      previous plugin's result on stdin; ADD, then CHECK, then DEL (twice, as runtimes do);
//   4. the rules it applied (nft list ruleset in the pod netns), and a connection from the pod
//      to the web server proven redirected to 15001 (SO_ORIGINAL_DST = the web server);
//   5. cleanup, always: on success, on failure, on Ctrl-C.
// Prints PASS or FAIL at the end; exits 0 only on PASS. Needs root (network namespaces).
//
//   node dist/src/demo/demo.js [--plugin PATH]
//     --plugin PATH   run another build of the plugin (e.g. /opt/cni/bin/istio-cni) instead of ours
import { ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as https from 'node:https';
import { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { renderKubeconfig } from '../installer/kubeconfig';

const PACKAGE_ROOT = path.resolve(__dirname, '..', '..', '..');
const OUR_PLUGIN = path.join(PACKAGE_ROOT, 'bin', 'istio-cni-ts.js');
const PROBE = path.join(__dirname, 'probe.js');

const POD_IP = '10.250.0.2';
const WORLD_IP = '10.250.0.1';
/** A second address of the world namespace that the pod's annotation excludes from capture. */
const WORLD_EXCLUDED_IP = '10.250.0.3';
const WEB_PORT = 8080;
const ENVOY_OUTBOUND = 15001;
const TOKEN = `demo-token-${Math.random().toString(36).slice(2)}`;

const POD = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: {
    name: 'productpage-v1',
    namespace: 'demo',
    uid: '3f1c2a9e-0d7b-4c55-9a61-demo00000001',
    labels: { app: 'productpage', 'security.istio.io/tlsMode': 'istio' },
    annotations: {
      'sidecar.istio.io/status': '{"initContainers":null,"containers":["istio-proxy"],"volumes":["istio-envoy"]}',
      'traffic.sidecar.istio.io/excludeOutboundIPRanges': `${WORLD_EXCLUDED_IP}/32`,
    },
  },
  spec: {
    containers: [
      { name: 'productpage', image: 'docker.io/istio/examples-bookinfo-productpage-v1:1.20.2', ports: [{ containerPort: 9080 }] },
      {
        name: 'istio-proxy',
        image: 'docker.io/istio/proxyv2:1.24.0',
        args: ['proxy', 'sidecar', '--domain', '$(POD_NAMESPACE).svc.cluster.local'],
        securityContext: { runAsUser: 1337, runAsGroup: 1337, runAsNonRoot: true },
      },
    ],
  },
};

// ---------------------------------------------------------------------------------------------
// Output.

const tty = process.stdout.isTTY === true;
const paint = (code: string) => (s: string) => (tty ? `\x1b[${code}m${s}\x1b[0m` : s);
const bold = paint('1');
const green = paint('32');
const red = paint('31');
const dim = paint('2');

const say = (s = '') => process.stdout.write(`${s}\n`);
const indent = (text: string, pad = '      ') =>
  text
    .replace(/\n$/, '')
    .split('\n')
    .map((l) => `${pad}${l}`)
    .join('\n');

interface Check {
  what: string;
  ok: boolean;
}
const checks: Check[] = [];
function check(what: string, ok: boolean, detail = ''): boolean {
  checks.push({ what, ok });
  say(`      ${ok ? green('ok') : red('FAILED')}  ${what}${detail ? dim(`  (${detail})`) : ''}`);
  return ok;
}

let stepNo = 0;
const STEPS = 8;
const step = (title: string) => say(`\n${bold(`[${++stepNo}/${STEPS}] ${title}`)}`);

// ---------------------------------------------------------------------------------------------
// Cleanup: registered as things are created, run in reverse order exactly once.

const undo: { what: string; fn: () => void }[] = [];
let cleanedUp = false;
function cleanup(): void {
  if (cleanedUp) return;
  cleanedUp = true;
  for (const u of undo.reverse()) {
    try {
      u.fn();
    } catch (e) {
      say(`      ${red('cleanup')} ${u.what}: ${(e as Error).message}`);
    }
  }
}

class DemoFailure extends Error {}

let workDir: string | undefined;

// ---------------------------------------------------------------------------------------------
// Pieces.

function need(tool: string, pkg: string): void {
  if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new DemoFailure(`"${tool}" is not installed (apt-get install ${pkg})`);
}

function makePki(dir: string): { ca: string; cert: string; key: string } {
  const f = (n: string) => path.join(dir, n);
  const ossl = (...args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  ossl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.crt'), '-days', '1', '-subj', '/CN=istio-cni-ts demo CA');
  ossl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('api.key'), '-out', f('api.csr'), '-subj', '/CN=kube-apiserver');
  fs.writeFileSync(f('ext'), 'subjectAltName=IP:127.0.0.1\n');
  ossl(
    'x509',
    '-req',
    '-in',
    f('api.csr'),
    '-CA',
    f('ca.crt'),
    '-CAkey',
    f('ca.key'),
    '-CAcreateserial',
    '-out',
    f('api.crt'),
    '-days',
    '1',
    '-extfile',
    f('ext'),
  );
  return { ca: fs.readFileSync(f('ca.crt'), 'utf8'), cert: fs.readFileSync(f('api.crt'), 'utf8'), key: fs.readFileSync(f('api.key'), 'utf8') };
}

/** The kubeconfig install-cni writes for the plugin (cluster CA, service account token). */
function kubeconfig(server: string, caPem: string): string {
  return renderKubeconfig(server, { data: Buffer.from(caPem).toString('base64') }, TOKEN);
}

async function startApi(pki: { cert: string; key: string }, log: string[]): Promise<{ url: string; close: () => void }> {
  const podPath = `/api/v1/namespaces/${POD.metadata.namespace}/pods/${POD.metadata.name}`;
  const server = https.createServer({ cert: pki.cert, key: pki.key }, (req, res) => {
    const authorized = req.headers.authorization === `Bearer ${TOKEN}`;
    const status = !authorized ? 401 : req.method === 'GET' && req.url === podPath ? 200 : 404;
    log.push(`${req.method} ${req.url} -> ${status}`);
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(status === 200 ? JSON.stringify(POD) : JSON.stringify({ kind: 'Status', code: status, message: status === 401 ? 'Unauthorized' : 'not found' }));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeNetns(name: string): string {
  ip('netns', 'add', name);
  undo.push({ what: `netns ${name}`, fn: () => ip('netns', 'del', name) });
  ip('-n', name, 'link', 'set', 'lo', 'up');
  return `/run/netns/${name}`;
}

const children: ChildProcess[] = [];

function startServer(ns: string, port: number, label: string): Promise<void> {
  // stdin stays open as a lifeline: the server exits when it closes, even if the demo is killed.
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, PROBE, 'server', String(port), label], { stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin!.on('error', () => undefined);
  children.push(child);
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    child.stdout!.on('data', (d) => String(d).includes('ready') && resolve());
    child.on('exit', (code) => reject(new DemoFailure(`server "${label}" in ${ns} exited (${code}): ${err.trim()}`)));
  });
}

interface Reply {
  label: string;
  local: string;
  remote: string;
  originalDst: { address: string; port: number } | null;
}

function connect(ns: string, host: string, port: number): Reply | string {
  const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, PROBE, 'client', host, String(port)], { encoding: 'utf8', timeout: 5000 });
  const out = (r.stdout ?? '').trim();
  if (r.status !== 0 || !out.startsWith('{')) return out || r.stderr || 'no answer';
  return JSON.parse(out) as Reply;
}

function describeReply(r: Reply | string): string {
  if (typeof r === 'string') return `error: ${r}`;
  const od = r.originalDst ? `, SO_ORIGINAL_DST ${r.originalDst.address}:${r.originalDst.port}` : '';
  return `answered by "${r.label}" (connection arrived at ${r.local}${od})`;
}

interface PluginRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** What libcni does: look the plugin up by type in CNI_PATH, exec it with CNI_* env and the config on stdin. */
function runPlugin(cniPath: string, command: string, netns: string, netconf: string): Promise<PluginRun> {
  const env = {
    CNI_COMMAND: command,
    CNI_CONTAINERID: 'd3m0c0ffee',
    CNI_NETNS: netns,
    CNI_IFNAME: 'eth0',
    CNI_PATH: cniPath,
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${POD.metadata.namespace};K8S_POD_NAME=${POD.metadata.name};K8S_POD_INFRA_CONTAINER_ID=d3m0c0ffee;K8S_POD_UID=${POD.metadata.uid}`,
    // `#!/usr/bin/env node` must find this node.
    PATH: `${path.dirname(process.execPath)}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`,
  };
  const shown = ['CNI_COMMAND', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_ARGS'].map((k) => `${k}=${env[k as keyof typeof env]}`).join(' ');
  say(dim(`      $ ${shown} \\\n          ${path.join(cniPath, 'istio-cni')} < netconf.json`));
  return new Promise((resolve) => {
    const child = spawn(path.join(cniPath, 'istio-cni'), [], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    children.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', (e) => resolve({ code: null, stdout, stderr: `${stderr}${e.message}\n` }));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    // A plugin may exit without reading its stdin (EPIPE): that is its exit code's business.
    child.stdin.on('error', () => undefined);
    child.stdin.end(netconf);
  });
}

function showPluginRun(r: PluginRun): void {
  say(`      exit ${r.code}${r.stdout.trim() ? `, stdout: ${r.stdout.trim()}` : ', stdout: (empty)'}`);
  for (const line of r.stderr.split('\n').filter((l) => l.trim() !== '')) {
    try {
      const e = JSON.parse(line) as Record<string, unknown>;
      const fields = Object.entries(e)
        .filter(([k]) => !['level', 'time', 'msg'].includes(k))
        .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join(' ');
      say(dim(`      log ${String(e.level).padEnd(5)} ${e.msg}${fields ? `  ${fields}` : ''}`));
    } catch {
      say(dim(`      stderr: ${line}`));
    }
  }
}

function nftTables(ns: string): string[] {
  const doc = JSON.parse(execFileSync('ip', ['netns', 'exec', ns, 'nft', '-j', 'list', 'ruleset'], { encoding: 'utf8' })) as {
    nftables: { table?: { family: string; name: string } }[];
  };
  return doc.nftables.filter((x) => x.table).map((x) => `${x.table!.family} ${x.table!.name}`);
}

// ---------------------------------------------------------------------------------------------

function parseArgs(argv: string[]): { plugin: string } {
  let plugin = OUR_PLUGIN;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--plugin' && argv[i + 1]) plugin = path.resolve(argv[++i]);
    else if (argv[i] === '--help' || argv[i] === '-h') {
      say("usage: npm run demo [-- --plugin PATH]\n  Runs the CNI plugin's sidecar flow on this machine (root needed) and prints PASS or FAIL.");
      process.exit(0);
    } else throw new DemoFailure(`unknown argument ${JSON.stringify(argv[i])} (usage: demo [--plugin PATH])`);
  }
  return { plugin };
}

async function run(opts: { plugin: string }): Promise<void> {
  say(bold('istio-cni-ts demo: the CNI plugin redirecting a sidecar pod, on this machine, no cluster'));
  if (process.getuid?.() !== 0) throw new DemoFailure('the demo creates network namespaces: run it as root (sudo npm run demo)');
  need('ip', 'iproute2');
  need('nft', 'nftables');
  need('openssl', 'openssl');
  if (!fs.existsSync(opts.plugin)) throw new DemoFailure(`plugin ${opts.plugin} not found (run npm run build)`);
  if (!fs.existsSync(PROBE)) throw new DemoFailure(`${PROBE} not found (run npm run build)`);

  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'icts-demo-'));
  workDir = work;
  undo.push({ what: `temp dir ${work}`, fn: () => fs.rmSync(work, { recursive: true, force: true }) });
  const runDir = path.join(work, 'var-run-istio-cni');
  const cniBin = path.join(work, 'opt-cni-bin');
  fs.mkdirSync(runDir);
  fs.mkdirSync(cniBin);
  fs.symlinkSync(opts.plugin, path.join(cniBin, 'istio-cni'));
  say(dim(`      work dir ${work}`));

  step('A local Kubernetes API stand-in');
  const apiLog: string[] = [];
  const pki = makePki(work);
  const api = await startApi(pki, apiLog);
  undo.push({ what: 'API stand-in', fn: api.close });
  fs.writeFileSync(path.join(runDir, 'istio-cni-kubeconfig'), kubeconfig(api.url, pki.ca), { mode: 0o600 });
  say(`      ${api.url}  (TLS with a CA generated just now; requests need the bearer token)`);
  say(`      serves pod ${POD.metadata.namespace}/${POD.metadata.name}: containers productpage + istio-proxy (sidecar injected),`);
  say(`      annotation traffic.sidecar.istio.io/excludeOutboundIPRanges=${WORLD_EXCLUDED_IP}/32`);
  say(`      kubeconfig for the plugin: ${path.join(runDir, 'istio-cni-kubeconfig')}`);

  step('A pod network namespace, wired to the world by a veth pair');
  const tag = `${process.pid}`;
  const podNs = `icts-demo-pod-${tag}`;
  const worldNs = `icts-demo-world-${tag}`;
  const podPath = makeNetns(podNs);
  makeNetns(worldNs);
  ip('-n', podNs, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', worldNs);
  ip('-n', podNs, 'addr', 'add', `${POD_IP}/24`, 'dev', 'eth0');
  ip('-n', worldNs, 'addr', 'add', `${WORLD_IP}/24`, 'dev', 'eth0');
  ip('-n', worldNs, 'addr', 'add', `${WORLD_EXCLUDED_IP}/24`, 'dev', 'eth0');
  for (const ns of [podNs, worldNs]) ip('-n', ns, 'link', 'set', 'eth0', 'up');
  undo.push({
    what: 'servers',
    fn: () => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    },
  });
  say(`      pod   netns ${podNs} (${podPath}): eth0 ${POD_IP}/24`);
  say(`      world netns ${worldNs}: eth0 ${WORLD_IP}/24 and ${WORLD_EXCLUDED_IP}/24, a web server on :${WEB_PORT}`);
  say(`      in the pod, a stand-in for Envoy's outbound listener on :${ENVOY_OUTBOUND}`);
  await Promise.all([startServer(worldNs, WEB_PORT, `web server in the world netns`), startServer(podNs, ENVOY_OUTBOUND, `Envoy outbound :${ENVOY_OUTBOUND}`)]);

  step('Before the plugin runs: the pod talks to the world directly');
  let r = connect(podNs, WORLD_IP, WEB_PORT);
  say(`      pod -> ${WORLD_IP}:${WEB_PORT}  ${describeReply(r)}`);
  check('reached the web server directly', typeof r !== 'string' && r.label.startsWith('web server') && r.originalDst === null);

  step('The runtime runs the chained plugin: ADD');
  const prevResult = {
    cniVersion: '1.0.0',
    interfaces: [{ name: 'eth0', sandbox: podPath }],
    ips: [{ address: `${POD_IP}/24`, gateway: WORLD_IP, interface: 0 }],
    routes: [{ dst: '0.0.0.0/0' }],
    dns: {},
  };
  const netconf = (over: Record<string, unknown> = {}) =>
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'k8s-pod-network',
      type: 'istio-cni',
      plugin_log_level: 'info',
      cni_agent_run_dir: runDir,
      ambient_enabled: false,
      exclude_namespaces: ['kube-system'],
      pod_namespace: 'istio-system',
      native_nftables: true,
      pod_lookup_attempts: 3,
      pod_lookup_interval_ms: 200,
      prevResult,
      ...over,
    });
  fs.writeFileSync(path.join(work, 'netconf.json'), `${JSON.stringify(JSON.parse(netconf()), null, 2)}\n`);
  say(dim(`      network config (the conflist entry install-cni writes, plus prevResult from the main plugin): ${path.join(work, 'netconf.json')}`));
  const add = await runPlugin(cniBin, 'ADD', podPath, netconf());
  showPluginRun(add);
  say(dim(`      API stand-in saw: ${apiLog.join('; ') || 'no request'}`));
  let addResult: unknown;
  try {
    addResult = JSON.parse(add.stdout);
  } catch {
    addResult = undefined;
  }
  const addOk = check('ADD succeeded and passed the previous result through', add.code === 0 && JSON.stringify(addResult) === JSON.stringify(prevResult));
  if (!addOk) throw new DemoFailure("the plugin's ADD failed (its output is above); nothing further to show");

  step('The rules the plugin applied in the pod netns (nft list ruleset)');
  const ruleset = execFileSync('ip', ['netns', 'exec', podNs, 'nft', 'list', 'ruleset'], { encoding: 'utf8' });
  say(indent(ruleset || '(empty)\n'));
  check('the pod netns holds the istio-proxy-nat table', nftTables(podNs).includes('inet istio-proxy-nat'));

  step('After ADD: the same connection is redirected to the sidecar');
  r = connect(podNs, WORLD_IP, WEB_PORT);
  say(`      pod -> ${WORLD_IP}:${WEB_PORT}  ${describeReply(r)}`);
  check(
    `redirected to :${ENVOY_OUTBOUND}, SO_ORIGINAL_DST = ${WORLD_IP}:${WEB_PORT}`,
    typeof r !== 'string' && r.label.startsWith('Envoy') && r.originalDst?.address === WORLD_IP && r.originalDst?.port === WEB_PORT,
  );
  r = connect(podNs, WORLD_EXCLUDED_IP, WEB_PORT);
  say(`      pod -> ${WORLD_EXCLUDED_IP}:${WEB_PORT}  ${describeReply(r)}`);
  check('the excluded CIDR (pod annotation) is not redirected', typeof r !== 'string' && r.label.startsWith('web server'));
  const counted = (
    spawnSync('ip', ['netns', 'exec', podNs, 'nft', 'list', 'chain', 'inet', 'istio-proxy-nat', 'istio-redirect'], { encoding: 'utf8' }).stdout ?? ''
  )
    .split('\n')
    .find((l) => l.includes('redirect to'));
  if (counted) say(dim(`      the rule that did it, with its counters now: ${counted.trim()}`));

  step('CHECK: the runtime asks whether the pod is still set up');
  const chk = await runPlugin(cniBin, 'CHECK', podPath, netconf());
  showPluginRun(chk);
  check('CHECK passed', chk.code === 0);

  step('DEL: the pod goes away (runtimes call DEL twice, the second time without a netns)');
  const del = await runPlugin(cniBin, 'DEL', podPath, netconf());
  showPluginRun(del);
  const del2 = await runPlugin(cniBin, 'DEL', '', netconf());
  showPluginRun(del2);
  const left = nftTables(podNs);
  check('both DELs succeeded and no table is left in the pod netns', del.code === 0 && del2.code === 0 && left.length === 0, left.join(', ') || 'no tables');
  r = connect(podNs, WORLD_IP, WEB_PORT);
  say(`      pod -> ${WORLD_IP}:${WEB_PORT}  ${describeReply(r)}`);
  check('the pod talks to the world directly again', typeof r !== 'string' && r.label.startsWith('web server'));
  const logFile = path.join(runDir, 'istio-cni.log');
  if (fs.existsSync(logFile))
    say(dim(`      the plugin also logged to ${logFile} (${fs.readFileSync(logFile, 'utf8').split('\n').filter(Boolean).length} lines)`));
}

async function main(): Promise<number> {
  let interrupted: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    interrupted = sig;
    say(`\n${red(`interrupted (${sig})`)}: cleaning up`);
    cleanup();
    say(`${bold(red('FAIL'))} (interrupted)`);
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // Last resorts: whatever ends this process, the namespaces and servers go with it.
  process.on('uncaughtException', (e) => {
    say(`\n${red('unexpected error')}: ${e.stack ?? e.message}\ncleaning up`);
    cleanup();
    say(`${bold(red('FAIL'))}`);
    process.exit(1);
  });
  process.on('exit', () => cleanup());
  const watchdog = setTimeout(() => {
    say(`\n${red('the demo took longer than 90 s')}: cleaning up`);
    cleanup();
    say(`${bold(red('FAIL'))} (timed out)`);
    process.exit(1);
  }, 90_000);
  watchdog.unref();

  let error: unknown;
  try {
    await run(parseArgs(process.argv.slice(2)));
  } catch (e) {
    error = e;
  }
  if (interrupted) return 130;
  if (undo.length > 0) say(`\n${bold('Cleanup')}`);
  cleanup();
  const leftover = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .stdout.split('\n')
    .filter((l) => l.includes(`icts-demo-`) && l.includes(`-${process.pid}`));
  if (workDir !== undefined || leftover.length > 0) {
    const files = workDir !== undefined && fs.existsSync(workDir) ? [workDir] : [];
    check('network namespaces, servers, API stand-in and temp files removed', leftover.length === 0 && files.length === 0, [...leftover, ...files].join(', '));
  }
  clearTimeout(watchdog);

  say();
  if (error) {
    say(`${red('error:')} ${error instanceof DemoFailure ? error.message : ((error as Error).stack ?? String(error))}`);
  }
  const failed = checks.filter((c) => !c.ok);
  if (error || failed.length > 0 || checks.length === 0) {
    say(`${bold(red('FAIL'))}${failed.length ? `: ${failed.map((c) => c.what).join('; ')}` : ''}`);
    return 1;
  }
  say(
    `${bold(green('PASS'))}: ${checks.length} checks; a sidecar pod's outbound traffic was redirected to ${ENVOY_OUTBOUND} by the rules our CNI plugin applied, and removed on DEL`,
  );
  return 0;
}

main().then((code) => {
  process.exitCode = code;
});
