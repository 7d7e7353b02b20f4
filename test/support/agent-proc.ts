// The node agent as a real process (`istio-cni-ts agent`) on temporary directories, for the
// fault and fast-path tests: a primary CNI config, a fake plugin binary, a service account whose
// CA and token point the installer's kubeconfig at a local API stand-in, and the run dir where it
// serves log.sock and cni-shim.sock. Output lines are kept; /proc tells its fds and threads.
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ExitStatus, stopChild, watchChild } from './child-lines';
import { PACKAGE_ROOT } from './conformance';
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
  const dirs = [
    '--mounted-cni-net-dir',
    d.net,
    '--cni-bin-dir',
    d.bin,
    '--cni-bin-source-dir',
    d.src,
    '--service-account-dir',
    d.sa,
    '--cni-agent-run-dir',
    d.run,
  ];
  return opts.local ? [...dirs, '--listen-address', '127.0.0.1', '--health-port', '0', '--monitoring-port', '0'] : dirs;
}

/**
 * Starts the agent and waits for its fast-path socket. `apiPort` sets KUBERNETES_SERVICE_HOST/PORT
 * to 127.0.0.1:<port> (the installer's kubeconfig then points at the stand-in).
 */
export async function startAgentProcess(
  d: AgentDirs,
  opts: { apiPort?: number; env?: Record<string, string>; args?: string[]; installCni?: boolean } = {},
): Promise<AgentProc> {
  const args = [...(opts.installCni ? [INSTALL_CNI_BIN] : [AGENT_BIN, 'agent']), ...agentArgs(d, { local: true }), ...(opts.args ?? [])];
  const proc = spawn(process.execPath, args, {
    env: {
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      KUBERNETES_SERVICE_HOST: '127.0.0.1',
      KUBERNETES_SERVICE_PORT: String(opts.apiPort ?? 6443),
      REPAIR_ENABLED: 'false',
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
    fds: () => fs.readdirSync(`/proc/${pid}/fd`),
    threads: () => Number(/^Threads:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]),
    stop: async () => {
      const { code, signal } = await stopChild(child);
      return { code, signal };
    },
  };
  try {
    await until(
      'the agent serving cni-shim.sock',
      () => {
        if (child.exit) throw new Error(`the agent exited during start-up:\n${out.join('\n')}`);
        return out.some((l) => l.includes('CNI fast-path server listening'));
      },
      20_000,
    );
  } catch (e) {
    proc.kill('SIGKILL');
    throw e;
  }
  return a;
}
