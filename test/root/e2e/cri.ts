// A small CRI (runtime.v1) client over gRPC, for the real-runtime e2e test: the calls kubelet
// makes to run and tear down a pod sandbox, typed for what the test reads, each timed.
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { PACKAGE_ROOT } from '../../support/conformance';

/** tsc does not copy .proto files: read it from the source tree. */
export const CRI_PROTO = path.join(PACKAGE_ROOT, 'test', 'root', 'e2e', 'cri-v1-subset.proto');

export interface SandboxMetadata {
  name: string;
  uid: string;
  namespace: string;
  attempt: number;
}

export interface PodSandboxConfig {
  metadata: SandboxMetadata;
  hostname: string;
  log_directory: string;
  dns_config: { servers: string[]; searches: string[]; options: string[] };
  port_mappings: { protocol: 'TCP' | 'UDP' | 'SCTP'; container_port: number; host_port: number; host_ip: string }[];
  labels: Record<string, string>;
  annotations: Record<string, string>;
  linux: {
    cgroup_parent: string;
    security_context: { namespace_options: { network: NamespaceMode; pid: NamespaceMode; ipc: NamespaceMode } };
  };
}

type NamespaceMode = 'POD' | 'CONTAINER' | 'NODE';
export type SandboxState = 'SANDBOX_READY' | 'SANDBOX_NOTREADY';

export interface CriMount {
  container_path: string;
  host_path: string;
  readonly?: boolean;
  propagation?: 'PROPAGATION_PRIVATE' | 'PROPAGATION_HOST_TO_CONTAINER' | 'PROPAGATION_BIDIRECTIONAL';
}

/** A container as kubelet describes it to the runtime (the fields of cri-v1-subset.proto). */
export interface ContainerConfig {
  metadata: { name: string; attempt: number };
  image: { image: string };
  command: string[];
  args: string[];
  envs: { key: string; value: string }[];
  mounts: CriMount[];
  labels: Record<string, string>;
  annotations: Record<string, string>;
  log_path: string;
  linux: {
    resources: { cpu_shares?: number; memory_limit_in_bytes?: number; cpu_period?: number; cpu_quota?: number; oom_score_adj?: number };
    security_context: {
      capabilities: { add_capabilities: string[]; drop_capabilities: string[] };
      privileged: boolean;
      namespace_options?: { network: string; pid: string; ipc: string };
      run_as_user?: { value: number };
      run_as_group?: { value: number };
      readonly_rootfs?: boolean;
      no_new_privs?: boolean;
      seccomp?: { profile_type: 'RuntimeDefault' | 'Unconfined' | 'Localhost' };
      apparmor?: { profile_type: 'RuntimeDefault' | 'Unconfined' | 'Localhost' };
    };
  };
}

export interface ContainerStatus {
  id: string;
  state: 'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN';
  exit_code: number;
  reason: string;
  message: string;
  log_path: string;
}

export interface SandboxStatus {
  id: string;
  metadata: SandboxMetadata;
  state: SandboxState;
  network: { ip: string; additional_ips: { ip: string }[] } | null;
  annotations: Record<string, string>;
}

/** The part of containerd's verbose sandbox info the test reads. */
export interface SandboxInfo {
  pid: number;
  runtimeSpec?: { linux?: { namespaces?: { type: string; path?: string }[] } };
}

export interface Condition {
  type: string;
  status: boolean;
  reason: string;
  message: string;
}

export interface Timing {
  method: string;
  ms: number;
  ok: boolean;
}

export interface CriClient {
  version(): Promise<{ runtime_name: string; runtime_version: string; runtime_api_version: string }>;
  conditions(): Promise<Condition[]>;
  /** Status(verbose): containerd's info map (its config, the CNI config it has loaded, the last load status). */
  statusInfo(): Promise<Record<string, string>>;
  /** `runtimeHandler`: a runtime named in containerd's config (default: its default runtime). */
  runPodSandbox(config: PodSandboxConfig, runtimeHandler?: string): Promise<string>;
  stopPodSandbox(id: string): Promise<void>;
  removePodSandbox(id: string): Promise<void>;
  podSandboxStatus(id: string): Promise<{ status: SandboxStatus; info: SandboxInfo }>;
  listPodSandbox(): Promise<{ id: string; metadata: SandboxMetadata; state: SandboxState }[]>;
  imageExists(ref: string): Promise<boolean>;
  /** CreateContainer in a sandbox (`config` as cri-v1-subset.proto's ContainerConfig). */
  createContainer(sandboxId: string, config: ContainerConfig, sandboxConfig: PodSandboxConfig): Promise<string>;
  startContainer(id: string): Promise<void>;
  /** Stops with SIGTERM, then SIGKILL after `timeoutS` (kubelet's grace period). */
  stopContainer(id: string, timeoutS: number): Promise<void>;
  removeContainer(id: string): Promise<void>;
  containerStatus(id: string): Promise<ContainerStatus>;
  readonly timings: Timing[];
  close(): void;
}

type Callback = (err: grpc.ServiceError | null, res: unknown) => void;
type Stub = grpc.Client & Record<string, (req: unknown, meta: grpc.Metadata, opts: grpc.CallOptions, cb: Callback) => void>;

/** `endpoint` is a gRPC target such as unix:///tmp/x/containerd.sock. */
export function criClient(endpoint: string, deadlineMs = 60_000): CriClient {
  const def = protoLoader.loadSync(CRI_PROTO, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  const pkg = grpc.loadPackageDefinition(def) as { runtime: { v1: Record<'RuntimeService' | 'ImageService', grpc.ServiceClientConstructor> } };
  const v1 = pkg.runtime.v1;
  const creds = grpc.credentials.createInsecure();
  const runtime = new v1.RuntimeService(endpoint, creds) as Stub;
  const images = new v1.ImageService(endpoint, creds) as Stub;
  const timings: Timing[] = [];

  const call = <T>(stub: Stub, method: string, req: unknown): Promise<T> =>
    new Promise((resolve, reject) => {
      const t0 = performance.now();
      stub[method](req, new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (err, res) => {
        timings.push({ method, ms: performance.now() - t0, ok: !err });
        if (err) reject(err);
        else resolve(res as T);
      });
    });

  return {
    timings,
    version: () => call(runtime, 'Version', { version: 'v1' }),
    conditions: async () => (await call<{ status: { conditions: Condition[] } | null }>(runtime, 'Status', {})).status?.conditions ?? [],
    statusInfo: async () => (await call<{ info: Record<string, string> }>(runtime, 'Status', { verbose: true })).info ?? {},
    runPodSandbox: async (config, runtimeHandler = '') =>
      (await call<{ pod_sandbox_id: string }>(runtime, 'RunPodSandbox', { config, runtime_handler: runtimeHandler })).pod_sandbox_id,
    stopPodSandbox: async (id) => {
      await call(runtime, 'StopPodSandbox', { pod_sandbox_id: id });
    },
    removePodSandbox: async (id) => {
      await call(runtime, 'RemovePodSandbox', { pod_sandbox_id: id });
    },
    podSandboxStatus: async (id) => {
      const r = await call<{ status: SandboxStatus; info: Record<string, string> }>(runtime, 'PodSandboxStatus', { pod_sandbox_id: id, verbose: true });
      return { status: r.status, info: JSON.parse(r.info.info ?? '{}') as SandboxInfo };
    },
    listPodSandbox: async () => (await call<{ items: { id: string; metadata: SandboxMetadata; state: SandboxState }[] }>(runtime, 'ListPodSandbox', {})).items,
    imageExists: async (ref) => !!(await call<{ image: unknown }>(images, 'ImageStatus', { image: { image: ref } })).image,
    createContainer: async (sandboxId, config, sandboxConfig) =>
      (await call<{ container_id: string }>(runtime, 'CreateContainer', { pod_sandbox_id: sandboxId, config, sandbox_config: sandboxConfig })).container_id,
    startContainer: async (id) => {
      await call(runtime, 'StartContainer', { container_id: id });
    },
    stopContainer: async (id, timeoutS) => {
      await call(runtime, 'StopContainer', { container_id: id, timeout: timeoutS });
    },
    removeContainer: async (id) => {
      await call(runtime, 'RemoveContainer', { container_id: id });
    },
    containerStatus: async (id) => (await call<{ status: ContainerStatus }>(runtime, 'ContainerStatus', { container_id: id })).status,
    close: () => {
      runtime.close();
      images.close();
    },
  };
}

/**
 * A sandbox config shaped like kubelet's (generatePodSandboxConfig): the pod's labels plus the
 * io.kubernetes.pod.* ones, the pod's annotations, a DNS config, pod network namespace.
 */
export function kubeletSandboxConfig(
  pod: {
    name: string;
    namespace: string;
    uid: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  },
  logRoot: string,
  cgroupRoot: string,
): PodSandboxConfig {
  return {
    metadata: { name: pod.name, uid: pod.uid, namespace: pod.namespace, attempt: 0 },
    hostname: pod.name,
    log_directory: path.join(logRoot, `${pod.namespace}_${pod.name}_${pod.uid}`),
    dns_config: {
      servers: ['10.96.0.10'],
      searches: [`${pod.namespace}.svc.cluster.local`, 'svc.cluster.local', 'cluster.local'],
      options: ['ndots:5'],
    },
    port_mappings: [],
    labels: {
      ...pod.labels,
      'io.kubernetes.pod.name': pod.name,
      'io.kubernetes.pod.namespace': pod.namespace,
      'io.kubernetes.pod.uid': pod.uid,
    },
    annotations: { ...pod.annotations, 'kubernetes.io/config.source': 'api', 'kubernetes.io/config.seen': new Date().toISOString() },
    linux: {
      cgroup_parent: `${cgroupRoot}/pod${pod.uid}`,
      security_context: { namespace_options: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } },
    },
  };
}

/** The network namespace path containerd created for the sandbox (as seen in its mount namespace). */
export function sandboxNetnsPath(info: SandboxInfo): string {
  const ns = info.runtimeSpec?.linux?.namespaces?.find((n) => n.type === 'network');
  if (!ns?.path) throw new Error(`no network namespace path in the sandbox info: ${JSON.stringify(info.runtimeSpec?.linux?.namespaces)}`);
  return ns.path;
}
