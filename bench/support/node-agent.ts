// The node agent as the DaemonSet runs it: the container's command and args and its environment
// built from install/kubernetes/<mode>/configmap.yaml (envFrom) and daemonset.yaml (values, the
// downward API: pod name and namespace, the node name; resource fields as a node without limits
// gives them), plus what kubelet adds (KUBERNETES_SERVICE_HOST/PORT). The host paths the
// DaemonSet mounts become directories given by the caller (HOST_NETNS: the node's netns through
// /proc, which the DaemonSet mounts at /host/proc), and the agent installs the payload
// (dist/payload, the image's /opt/cni/bin) into the bin dir itself and chains its entry into the
// primary conflist. Deviations, because the machine is shared: HEALTH_PORT=0, a free
// MONITORING_PORT, LISTEN_ADDRESS=127.0.0.1.
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parse } from 'yaml';
import { BIN, PACKAGE_ROOT, PAYLOAD_DIR } from './paths';
import { freePort, onLines, untilOrFail } from './testbed';

export interface NodeDirs {
  /** The host's /etc/cni/net.d (MOUNTED_CNI_NET_DIR); must hold the primary conflist. */
  net: string;
  /** The host's /opt/cni/bin (CNI_BIN_DIR). */
  bin: string;
  /** The host's /var/run/istio-cni (CNI_AGENT_RUN_DIR). */
  run: string;
  /** The service-account mount (token, ca.crt). */
  sa: string;
}

export interface DeployedAgent {
  readonly proc: ChildProcess;
  readonly pid: number;
  readonly out: string[];
  /** The installed CNI binary (the shim), as a runtime finds it. */
  readonly shim: string;
  readonly env: Record<string, string>;
  /** The command line it runs, and how it differs from the manifest's when it does. */
  readonly argv: string[];
  readonly note?: string;
  /** The network config a runtime passes our plugin: its conflist entry + cniVersion, name, prevResult. */
  pluginConf(prevResult: object): Record<string, unknown>;
  stop(): Promise<void>;
}

const MANIFESTS = path.join(PACKAGE_ROOT, 'install', 'kubernetes');
export const AGENT_POD = { name: 'istio-cni-node-bench', namespace: 'istio-system' };

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string }; resourceFieldRef?: { resource: string } };
}

/** The agent container of the manifests for `mode` ('sidecar' or 'ambient'): command, args, environment on node `node`. */
export function daemonSetContainer(node: string, mode = 'sidecar'): { command: string[]; args: string[]; env: Record<string, string> } {
  const read = (f: string) => parse(fs.readFileSync(path.join(MANIFESTS, mode, f), 'utf8')) as unknown;
  const cm = read('configmap.yaml') as { data: Record<string, string> };
  const c = (read('daemonset.yaml') as { spec: { template: { spec: { containers: { command?: string[]; args?: string[]; env?: EnvVar[] }[] } } } }).spec
    .template.spec.containers[0];
  const fields: Record<string, string> = { 'metadata.name': AGENT_POD.name, 'metadata.namespace': AGENT_POD.namespace, 'spec.nodeName': node };
  // No limits in the manifest: the downward API gives the node's allocatable amounts.
  const resources: Record<string, string> = { 'limits.memory': String(os.totalmem()), 'limits.cpu': String(os.cpus().length) };
  const env: Record<string, string> = { ...cm.data };
  for (const e of c.env ?? []) {
    const v = e.value ?? fields[e.valueFrom?.fieldRef?.fieldPath ?? ''] ?? resources[e.valueFrom?.resourceFieldRef?.resource ?? ''];
    if (v === undefined) throw new Error(`daemonset.yaml: env ${e.name} has a source the bench does not know: ${JSON.stringify(e.valueFrom)}`);
    env[e.name] = v;
  }
  return { command: c.command ?? [], args: c.args ?? [], env };
}

/**
 * The package's executable for the container's command (package.json "bin"), run by this Node.
 * When the package has no such entry, `istio-cni-ts agent` without the args (said in `note`).
 */
function agentCommand(command: string[], args: string[], root = PACKAGE_ROOT): { argv: string[]; note?: string } {
  const bins = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { bin: Record<string, string> }).bin;
  const entry = bins[command[0] ?? ''];
  if (entry) return { argv: [path.join(root, entry), ...command.slice(1), ...args] };
  return {
    argv: [path.join(root, path.relative(PACKAGE_ROOT, BIN)), 'agent'],
    note: `the manifest's command ${JSON.stringify([...command, ...args])} is not in package.json "bin": ran istio-cni-ts agent`,
  };
}

/** The tests' one `until`, failing at once (with the agent's output) when the agent has exited. */
function until<T>(what: string, f: () => T | undefined | false, ms: number, proc: ChildProcess, out: string[]): Promise<T> {
  return untilOrFail(what, f, ms, 50, {
    abort: () => (proc.exitCode !== null || proc.signalCode !== null ? `the agent exited (${proc.exitCode ?? proc.signalCode})` : undefined),
    detail: () => `:\n${out.slice(-30).join('\n')}`,
  });
}

/**
 * Starts the agent and waits until it serves the fast path with its pod cache synced, the shim is
 * installed and our entry is chained into the primary conflist. `wrap` prefixes the command (e.g.
 * nsenter into the runtime's mount namespace).
 */
export async function startDeployedAgent(o: {
  node: string;
  apiPort: number;
  dirs: NodeDirs;
  payload?: string;
  wrap?: string[];
  pluginType?: string;
  mode?: string;
  /** Another built checkout whose agent to run (an A/B of two commits); default this one. */
  agentRoot?: string;
}): Promise<DeployedAgent> {
  const payload = o.payload ?? PAYLOAD_DIR;
  const container = daemonSetContainer(o.node, o.mode);
  if (!fs.existsSync(path.join(payload, 'istio-cni'))) throw new Error(`${payload} holds no payload: run \`npm run package\` first`);
  const env: Record<string, string> = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    KUBERNETES_SERVICE_HOST: '127.0.0.1',
    KUBERNETES_SERVICE_PORT: String(o.apiPort),
    ...container.env,
    MOUNTED_CNI_NET_DIR: o.dirs.net,
    CNI_BIN_DIR: o.dirs.bin,
    CNI_BIN_SOURCE_DIR: payload,
    CNI_AGENT_RUN_DIR: o.dirs.run,
    SERVICE_ACCOUNT_DIR: o.dirs.sa,
    REPAIR_HOST_PROC_DIR: '/proc',
    HOST_NETNS: '/proc/1/ns/net',
    HEALTH_PORT: '0',
    MONITORING_PORT: String(await freePort()),
    LISTEN_ADDRESS: '127.0.0.1',
  };
  const { argv, note } = agentCommand(container.command, container.args, o.agentRoot);
  const cmd = [...(o.wrap ?? []), process.execPath, ...argv];
  const proc = spawn(cmd[0], cmd.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const out: string[] = [];
  for (const s of [proc.stdout!, proc.stderr!]) {
    onLines(s, (l) => {
      out.push(l);
      if (out.length > 5000) out.splice(0, out.length - 2000);
    });
  }
  const type = o.pluginType ?? env.CNI_PLUGIN_TYPE ?? 'istio-cni';
  const shim = path.join(o.dirs.bin, type);
  const conflist = () => {
    for (const f of fs
      .readdirSync(o.dirs.net)
      .filter((x) => x.endsWith('.conflist'))
      .sort()) {
      try {
        const c = JSON.parse(fs.readFileSync(path.join(o.dirs.net, f), 'utf8')) as { cniVersion: string; name: string; plugins: { type: string }[] };
        if (c.plugins.some((p) => p.type === type)) return c;
      } catch {
        // being rewritten
      }
    }
    return undefined;
  };
  const stop = async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    await Promise.race([exited, sleep(10_000)]);
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  };
  try {
    await until('the CNI fast-path server', () => out.some((l) => l.includes('CNI fast-path server listening')), 30_000, proc, out);
    // 'fast path pod cache synced': agents before 695b324 (an --agent-root A/B of an older commit).
    const synced = (l: string) => l.includes('node pods synced') || l.includes('fast path pod cache synced');
    await until('the node pods (the fast path pod cache) to sync', () => out.some(synced), 30_000, proc, out);
    await until(
      `the shim installed as ${shim}`,
      () => fs.existsSync(shim) && fs.existsSync(path.join(o.dirs.bin, 'istio-cni-ts', 'istio-cni-plugin')),
      60_000,
      proc,
      out,
    );
    await until('our entry chained into the primary conflist', conflist, 30_000, proc, out);
  } catch (e) {
    proc.kill('SIGKILL');
    throw e;
  }
  return {
    proc,
    pid: proc.pid!,
    out,
    shim,
    env,
    argv: cmd,
    note,
    pluginConf: (prevResult) => {
      const c = conflist();
      if (!c) throw new Error('our entry is no longer in the conflist');
      return { ...c.plugins.find((p) => p.type === type), cniVersion: c.cniVersion, name: c.name, prevResult };
    },
    stop,
  };
}
