// Runs the built executable as a container runtime runs a CNI plugin: the CNI_* environment,
// the network config on stdin, then stdout, stderr and the exit code.
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { PACKAGE_ROOT } from './conformance';

export const BIN = path.join(PACKAGE_ROOT, 'bin', 'istio-cni-ts.js');

export interface CniRun {
  stdout: string;
  stderr: string;
  code: number | null;
  ms: number;
}

/**
 * The network config a runtime hands our plugin as Istio's chained entry (debug logs, kube-system
 * excluded) with the previous plugin's result; `over` adds or replaces keys.
 */
export function pluginConf(runDir: string, prevResult: unknown, over: Record<string, unknown> = {}): string {
  return JSON.stringify({
    cniVersion: '1.0.0',
    name: 'k8s-pod-network',
    type: 'istio-cni',
    plugin_log_level: 'debug',
    cni_agent_run_dir: runDir,
    exclude_namespaces: ['kube-system'],
    pod_namespace: 'istio-system',
    prevResult,
    ...over,
  });
}

/** The CNI_* variables a kubelet's runtime sets for a pod's container `ctr-<name>`; `over` adds or replaces. */
export function cniEnv(command: string, netns: string, pod: { namespace: string; name: string }, over: Record<string, string> = {}): Record<string, string> {
  return {
    CNI_COMMAND: command,
    CNI_CONTAINERID: `ctr-${pod.name}`,
    CNI_NETNS: netns,
    CNI_IFNAME: 'eth0',
    CNI_PATH: '/opt/cni/bin',
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name};K8S_POD_INFRA_CONTAINER_ID=ctr-${pod.name};K8S_POD_UID=uid-${pod.name}`,
    ...over,
  };
}

/** `bin` defaults to this checkout's executable (a test may run a private copy of the package). */
export function runPlugin(env: Record<string, string>, stdin: string, bin = BIN): Promise<CniRun> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin], { env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ stdout, stderr, code, ms: Date.now() - t0 }));
    child.stdin.end(stdin);
  });
}

/** The JSON lines the plugin wrote to stderr. */
export function logLines(text: string): Record<string, unknown>[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}
