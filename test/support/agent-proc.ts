// The node agent as a real process (`istio-cni-ts agent`) on temporary directories, the one way
// every test starts it: a primary CNI config, a fake plugin binary, a service account whose CA and
// token point the installer's kubeconfig at a local API stand-in, and the run dir where it serves
// log.sock and cni-shim.sock; configured by flags or, as the DaemonSet does, by environment
// variables. Output lines are kept; the health and metrics addresses come from its log; /proc
// tells its fds and threads.
import * as assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ExitStatus, stopChild, watchChild } from './child-lines';
import { PACKAGE_ROOT } from './conformance';
import { freePort } from './http-get';
import { tempDir } from './tmp';
import { until } from './until';

export const AGENT_BIN = path.join(PACKAGE_ROOT, 'bin', 'istio-cni-ts.js');
/** The agent under the name Istio's chart runs it. */
export const INSTALL_CNI_BIN = path.join(PACKAGE_ROOT, 'bin', 'install-cni.js');
export const PRIMARY_LIST = JSON.stringify({
  cniVersion: '1.0.0',
  name: 'k8s-pod-network',
  plugins: [
    { type: 'ptp', mtu: 1460 },
    { type: 'portmap', capabilities: { portMappings: true } },
  ],
});

export interface AgentDirs {
  root: string;
  net: string;
  bin: string;
  src: string;
  sa: string;
  run: string;
}

/** Fresh dirs under a temp root (or under `base`: e.g. a small tmpfs), with a primary config unless told otherwise. */
export function agentDirs(opts: { base?: string; api?: { caPem: string; token: string }; primary?: boolean; layout?: Partial<AgentDirs> } = {}): AgentDirs {
  const root = opts.base ?? tempDir(path.join(os.tmpdir(), 'icts-agentp-'));
  const d: AgentDirs = {
    root,
    net: path.join(root, 'net'),
    bin: path.join(root, 'bin'),
    src: path.join(root, 'src'),
    sa: path.join(root, 'sa'),
    run: path.join(root, 'run'),
    ...opts.layout,
  };
  for (const p of [d.net, d.bin, d.src, d.sa]) fs.mkdirSync(p, { recursive: true });
  fs.writeFileSync(path.join(d.src, 'istio-cni'), '#!/bin/sh\necho plugin\n', { mode: 0o755 });
  fs.writeFileSync(path.join(d.sa, 'token'), opts.api?.token ?? 'token-one');
  fs.writeFileSync(path.join(d.sa, 'ca.crt'), opts.api?.caPem ?? 'CA');
  if (opts.primary !== false) fs.writeFileSync(path.join(d.net, '10-k8s.conflist'), PRIMARY_LIST);
  return d;
}

export interface AgentProc {
  readonly proc: ChildProcess;
  readonly pid: number;
  readonly out: string[];
  readonly exit: Promise<ExitStatus>;
  readonly dirs: AgentDirs;
  /** The health server's address (host:port). */
  health: string;
  /** The metrics server's address; '' without `metrics`. */
  metrics: string;
  /** Open descriptors of the agent (entries of /proc/<pid>/fd). */
  fds(): string[];
  threads(): number;
  /** SIGTERM, then the exit status (SIGKILL after 10 s). */
  stop(): Promise<ExitStatus>;
}

/**
 * The agent's directory flags (and, with `local`, health and metrics on 127.0.0.1, ports chosen
 * by the kernel): how every test that starts the agent process points it at its dirs.
 */
export type AgentDirPaths = Record<'net' | 'bin' | 'src' | 'sa' | 'run', string>;

export function agentArgs(d: AgentDirPaths, opts: { local?: boolean } = {}): string[] {
  return Object.entries(agentFlags(d, opts)).flatMap(([name, value]) => [`--${name}`, value]);
}

/** The same flags by name, as parseAgentConfig takes them (for an agent started in-process). */
export function agentFlags(d: AgentDirPaths, opts: { local?: boolean } = {}): Record<string, string> {
  const dirs = {
    'mounted-cni-net-dir': d.net,
    'cni-bin-dir': d.bin,
    'cni-bin-source-dir': d.src,
    'service-account-dir': d.sa,
    'cni-agent-run-dir': d.run,
  };
  return opts.local ? { ...dirs, 'listen-address': '127.0.0.1', 'health-port': '0', 'monitoring-port': '0' } : dirs;
}

/**
 * The same directories, and health and metrics on 127.0.0.1 (`monitoringPort`; 0 = no metrics
 * server), as the DaemonSet's environment variables instead of flags.
 */
export function agentEnvVars(d: AgentDirPaths, monitoringPort = 0): Record<string, string> {
  return {
    MOUNTED_CNI_NET_DIR: d.net,
    CNI_BIN_DIR: d.bin,
    CNI_BIN_SOURCE_DIR: d.src,
    SERVICE_ACCOUNT_DIR: d.sa,
    CNI_AGENT_RUN_DIR: d.run,
    LISTEN_ADDRESS: '127.0.0.1',
    HEALTH_PORT: '0',
    MONITORING_PORT: String(monitoringPort),
  };
}

export interface AgentStartOptions {
  /** KUBERNETES_SERVICE_HOST/PORT = 127.0.0.1:<port> (the installer's kubeconfig then points at the stand-in). */
  apiPort?: number;
  env?: Record<string, string>;
  args?: string[];
  /** Start it as `install-cni`, the name Istio's chart runs it under. */
  installCni?: boolean;
  /** A metrics server on a free port (`metrics` is its address); none otherwise. */
  metrics?: boolean;
  /** Directories and listen settings as environment variables (agentEnvVars), not flags. */
  configFromEnv?: boolean;
}

/** The address a `<server> server listening` line names, in the text or the JSON log format. */
function listeningAddress(out: string[], server: string): string | undefined {
  const line = out.find((l) => l.includes(`${server} server listening`));
  const m = line && /address=(\S+)|"address":"([^"]+)"/.exec(line);
  return m ? (m[1] ?? m[2]) : undefined;
}

/**
 * Starts the agent and waits until it serves its fast path and health (and metrics, when asked
 * for). The agent gets PATH, the API address and REPAIR_ENABLED=false, then `env`.
 */
export async function startAgentProcess(d: AgentDirs, opts: AgentStartOptions = {}): Promise<AgentProc> {
  const monitoringPort = opts.metrics ? await freePort() : 0;
  const config = opts.configFromEnv ? [] : [...agentArgs(d, { local: true }), ...(opts.metrics ? ['--monitoring-port', String(monitoringPort)] : [])];
  const args = [...(opts.installCni ? [INSTALL_CNI_BIN] : [AGENT_BIN, 'agent']), ...config, ...(opts.args ?? [])];
  const proc = spawn(process.execPath, args, {
    env: {
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      KUBERNETES_SERVICE_HOST: '127.0.0.1',
      KUBERNETES_SERVICE_PORT: String(opts.apiPort ?? 6443),
      REPAIR_ENABLED: 'false',
      ...(opts.configFromEnv ? agentEnvVars(d, monitoringPort) : {}),
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const child = watchChild(proc);
  const { out } = child;
  const pid = proc.pid!;
  const a: AgentProc = {
    proc,
    pid,
    out,
    exit: child.exited,
    dirs: d,
    health: '',
    metrics: '',
    fds: () => fs.readdirSync(`/proc/${pid}/fd`),
    threads: () => Number(/^Threads:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]),
    stop: async () => {
      const { code, signal } = await stopChild(child);
      return { code, signal };
    },
  };
  try {
    await until(
      opts.metrics ? 'the agent serving cni-shim.sock, health and metrics' : 'the agent serving cni-shim.sock and health',
      () => {
        if (child.exit) throw new Error(`the agent exited during start-up:\n${out.join('\n')}`);
        a.health = listeningAddress(out, 'health') ?? '';
        a.metrics = listeningAddress(out, 'metrics') ?? '';
        return out.some((l) => l.includes('CNI fast-path server listening')) && a.health !== '' && (!opts.metrics || a.metrics !== '');
      },
      30_000,
    );
  } catch (e) {
    proc.kill('SIGKILL');
    throw e;
  }
  return a;
}

/**
 * The agent against an API stand-in (its CA and token in the service account, its port as
 * KUBERNETES_SERVICE_PORT), once it has written the plugin's kubeconfig.
 */
export async function startAgentFor(api: { caPem: string; token: string; port: number }, opts: AgentStartOptions = {}): Promise<AgentProc> {
  const a = await startAgentProcess(agentDirs({ api }), { apiPort: api.port, ...opts });
  await until('the agent wrote its kubeconfig', () => fs.existsSync(path.join(a.dirs.run, 'istio-cni-kubeconfig')), 10_000);
  return a;
}

/** SIGTERM; the agent must exit 0 (the failure shows its last lines). */
export async function stopAgentCleanly(a: AgentProc): Promise<void> {
  const { code } = await a.stop();
  assert.equal(code, 0, `the agent stopped cleanly:\n${a.out.slice(-20).join('\n')}`);
}
