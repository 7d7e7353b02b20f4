// The one core/v1 Pod type of the project: the fields the plugin, the repair controller, the
// ambient agent and the fast path read, as the API serves them. Everything is optional (API
// objects come from outside); the accessors below read them once, the same way everywhere.
import { IpAddr, formatIp, parseIp, unmap } from '../net/ip';

export interface EnvVar {
  name?: string;
  value?: string;
  valueFrom?: unknown;
}

export interface Container {
  name?: string;
  args?: string[];
  env?: EnvVar[];
  securityContext?: { runAsUser?: number | null; runAsGroup?: number | null } | null;
}

export interface ContainerStateTerminated {
  exitCode?: number;
  reason?: string;
  message?: string;
}

export interface ContainerStatus {
  name?: string;
  state?: { terminated?: ContainerStateTerminated | null; waiting?: unknown; running?: unknown } | null;
  /** Go's LastTerminationState. */
  lastState?: { terminated?: ContainerStateTerminated | null } | null;
}

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  labels?: Record<string, string> | null;
  annotations?: Record<string, string> | null;
  deletionTimestamp?: string | null;
}

export interface Pod {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta | null;
  spec?: {
    nodeName?: string;
    hostNetwork?: boolean | null;
    serviceAccountName?: string;
    restartPolicy?: string;
    schedulerName?: string;
    initContainers?: Container[] | null;
    containers?: Container[] | null;
  } | null;
  status?: {
    phase?: string;
    podIP?: string;
    podIPs?: { ip?: string }[] | null;
    nominatedNodeName?: string;
    initContainerStatuses?: ContainerStatus[] | null;
  } | null;
}

/** The parts of a core/v1 Namespace the agent reads. */
export interface Namespace {
  metadata?: { name?: string; labels?: Record<string, string> | null; resourceVersion?: string } | null;
}

export const podName = (p: Pod): string => p.metadata?.name ?? '';
export const podNamespace = (p: Pod): string => p.metadata?.namespace ?? '';
export const podUid = (p: Pod): string => p.metadata?.uid ?? '';
/** namespace/name: the informer's key and what logs name a pod by. */
export const podRef = (p: Pod): string => `${podNamespace(p)}/${podName(p)}`;
export const podLabels = (p: Pod): Record<string, string> => p.metadata?.labels ?? {};
export const podAnnotations = (p: Pod): Record<string, string> => p.metadata?.annotations ?? {};
export const podNode = (p: Pod): string => p.spec?.nodeName ?? '';
export const podPhase = (p: Pod): string => p.status?.phase ?? '';
export const podContainers = (p: Pod): Container[] => p.spec?.containers ?? [];
export const podInitContainers = (p: Pod): Container[] => p.spec?.initContainers ?? [];

/**
 * status.podIPs, else status.podIP, parsed and unmapped (as netip.Addr.Unmap), duplicates
 * dropped. Addresses that do not parse are left out (upstream would panic on them).
 */
export function podIPs(p: Pod): IpAddr[] {
  const listed = (p.status?.podIPs ?? []).map((x) => x?.ip ?? '').filter((s) => s !== '');
  const texts = listed.length > 0 ? listed : p.status?.podIP ? [p.status.podIP] : [];
  const out = new Map<string, IpAddr>();
  for (const t of texts) {
    const a = parseIp(t);
    if (a) out.set(formatIp(unmap(a)), unmap(a));
  }
  return [...out.values()];
}
