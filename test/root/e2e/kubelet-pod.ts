// What kubelet hands the runtime for the DaemonSet's one container, computed from our manifests
// (install/kubernetes/<profile>/daemonset.yaml and configmap.yaml) the way kubelet does it:
// envFrom the ConfigMap, then env, with the downward-API values filled in (fieldRef, and
// resourceFieldRef on a container without limits: the node's allocatable); the service-link
// variables for the API; hostPath volumes as mounts with their propagation (each node path mapped
// to where the test's node keeps it); the service-account token and CA; capabilities, user,
// privileged; AppArmor from the pod annotation; seccomp Unconfined (no profile set); cpu shares
// from the request. The e2e node test runs exactly this.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { PACKAGE_ROOT } from '../../support/conformance';
import { ContainerConfig, CriMount } from './cri';

export const SERVICE_ACCOUNT_PATH = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface NodeFacts {
  nodeName: string;
  podName: string;
  podNamespace: string;
  /** Node path in the manifest (a hostPath) -> where this node keeps it. Every hostPath must be listed. */
  hostPaths: Record<string, string>;
  /** The projected service-account volume's directory (token, ca.crt, namespace). */
  serviceAccountDir: string;
  /** Service links: KUBERNETES_SERVICE_HOST / _PORT. */
  apiHost: string;
  apiPort: number;
  /** Allocatable memory (bytes) and CPUs: what resourceFieldRef limits.* resolve to without limits. */
  memoryBytes: number;
  cpus: number;
  image: string;
  logPath: string;
  /** Mounts the node needs beyond the manifest's (said why at the call site). */
  extraMounts?: CriMount[];
  /** Env beyond the manifest's (said why at the call site), applied last. */
  extraEnv?: Record<string, string>;
}

/** The chart-rendered YAML documents, free-form: kubeletContainer reads what a kubelet reads and throws on what it does not resolve. */
export interface Manifests {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- see above
  daemonSet: any;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- see above
  configMap: any;
}

/** A container's env entry as the manifest has it. */
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string }; resourceFieldRef?: { resource: string; divisor?: string } };
}

interface Volume {
  name: string;
  hostPath?: { path: string; type?: string };
}

interface VolumeMount {
  name: string;
  mountPath: string;
  readOnly?: boolean;
  mountPropagation?: string;
}

export function loadManifests(profile: 'sidecar' | 'ambient'): Manifests {
  const dir = path.join(PACKAGE_ROOT, 'install', 'kubernetes', profile);
  const one = (file: string) => YAML.parse(fs.readFileSync(path.join(dir, file), 'utf8'));
  return { daemonSet: one('daemonset.yaml'), configMap: one('configmap.yaml') };
}

const PROPAGATION: Record<string, CriMount['propagation']> = {
  None: 'PROPAGATION_PRIVATE',
  HostToContainer: 'PROPAGATION_HOST_TO_CONTAINER',
  Bidirectional: 'PROPAGATION_BIDIRECTIONAL',
};

function downward(e: EnvVar, n: NodeFacts): string {
  const f = e.valueFrom?.fieldRef?.fieldPath;
  if (f === 'spec.nodeName') return n.nodeName;
  if (f === 'metadata.name') return n.podName;
  if (f === 'metadata.namespace') return n.podNamespace;
  const r = e.valueFrom?.resourceFieldRef;
  if (r) {
    const divisor = Number(r.divisor ?? '1');
    if (r.resource === 'limits.memory') return String(Math.ceil(n.memoryBytes / divisor));
    if (r.resource === 'limits.cpu') return String(Math.ceil(n.cpus / divisor));
  }
  throw new Error(`env ${e.name}: a source this kubelet stand-in does not resolve: ${JSON.stringify(e.valueFrom)}`);
}

/** kubelet's milliCPUToShares. */
function cpuShares(q: string | undefined): number | undefined {
  if (!q) return undefined;
  const milli = q.endsWith('m') ? Number(q.slice(0, -1)) : Number(q) * 1000;
  return Math.max(2, Math.floor((milli * 1024) / 1000));
}

/** The pod's ContainerConfig for the DaemonSet's container. */
export function kubeletContainer(m: Manifests, n: NodeFacts): ContainerConfig {
  const tpl = m.daemonSet.spec.template;
  const c = tpl.spec.containers[0];
  const env = new Map<string, string>();
  for (const from of c.envFrom ?? []) {
    if (from.configMapRef?.name !== m.configMap.metadata.name) throw new Error(`envFrom ${JSON.stringify(from)}: not our ConfigMap`);
    for (const [k, v] of Object.entries(m.configMap.data as Record<string, string>)) env.set(k, v);
  }
  for (const e of c.env ?? []) env.set(e.name, e.value !== undefined ? String(e.value) : downward(e, n));
  env.set('KUBERNETES_SERVICE_HOST', n.apiHost);
  env.set('KUBERNETES_SERVICE_PORT', String(n.apiPort));
  env.set('KUBERNETES_SERVICE_PORT_HTTPS', String(n.apiPort));
  env.set('KUBERNETES_PORT', `tcp://${n.apiHost}:${n.apiPort}`);
  for (const [k, v] of Object.entries(n.extraEnv ?? {})) env.set(k, v);

  const volumes = new Map<string, Volume>((tpl.spec.volumes ?? []).map((v: Volume) => [v.name, v]));
  const mounts: CriMount[] = (c.volumeMounts ?? []).map((vm: VolumeMount) => {
    const v = volumes.get(vm.name);
    if (!v?.hostPath) throw new Error(`volume ${vm.name}: only hostPath volumes are expected`);
    const host = n.hostPaths[v.hostPath.path];
    if (!host) throw new Error(`hostPath ${v.hostPath.path}: the node does not say where it keeps it`);
    if (v.hostPath.type === 'DirectoryOrCreate') fs.mkdirSync(host, { recursive: true, mode: 0o755 });
    if (v.hostPath.type === 'Directory' && !fs.statSync(host).isDirectory()) throw new Error(`hostPath ${host} is not a directory`);
    return { container_path: vm.mountPath, host_path: host, readonly: !!vm.readOnly, propagation: PROPAGATION[vm.mountPropagation ?? 'None'] };
  });
  mounts.push({ container_path: SERVICE_ACCOUNT_PATH, host_path: n.serviceAccountDir, readonly: true, propagation: 'PROPAGATION_PRIVATE' });
  mounts.push(...(n.extraMounts ?? []));

  const sc = c.securityContext ?? {};
  const apparmor = tpl.metadata.annotations?.[`container.apparmor.security.beta.kubernetes.io/${c.name}`];
  return {
    metadata: { name: c.name, attempt: 0 },
    image: { image: n.image },
    command: c.command ?? [],
    args: c.args ?? [],
    envs: [...env].map(([key, value]) => ({ key, value })),
    mounts,
    labels: { 'io.kubernetes.container.name': c.name, 'io.kubernetes.pod.name': n.podName, 'io.kubernetes.pod.namespace': n.podNamespace },
    annotations: {},
    log_path: n.logPath,
    linux: {
      resources: { cpu_shares: cpuShares(c.resources?.requests?.cpu) },
      security_context: {
        capabilities: { add_capabilities: sc.capabilities?.add ?? [], drop_capabilities: sc.capabilities?.drop ?? [] },
        privileged: !!sc.privileged,
        namespace_options: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' },
        ...(sc.runAsUser !== undefined ? { run_as_user: { value: sc.runAsUser } } : {}),
        ...(sc.runAsGroup !== undefined ? { run_as_group: { value: sc.runAsGroup } } : {}),
        readonly_rootfs: !!sc.readOnlyRootFilesystem,
        // kubelet: no_new_privs = !allowPrivilegeEscalation, which defaults to true.
        no_new_privs: sc.allowPrivilegeEscalation === false,
        seccomp: { profile_type: sc.seccompProfile?.type === 'RuntimeDefault' ? 'RuntimeDefault' : 'Unconfined' },
        apparmor: { profile_type: apparmor === 'unconfined' ? 'Unconfined' : 'RuntimeDefault' },
      },
    },
  };
}
