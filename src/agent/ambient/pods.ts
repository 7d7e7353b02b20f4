// Pods and namespaces as the ambient agent reads them from the API, and the small facts it derives
// from them (Istio's cni/pkg/util/podutil.go and kube.CheckPodTerminal).
import { PodObjectMeta } from '../../kube/object-meta';
import { IpAddr, formatIp, parseIp } from '../../net/ip';
import { unmap } from '../../ambient/probe-sets';
import { WorkloadInfo } from '../../zds/messages';

export interface AmbientPod {
  metadata?: PodObjectMeta | null;
  spec?: {
    nodeName?: string;
    hostNetwork?: boolean | null;
    serviceAccountName?: string;
    restartPolicy?: string;
  } | null;
  status?: {
    phase?: string;
    podIP?: string;
    podIPs?: { ip?: string }[] | null;
  } | null;
}

export interface AmbientNamespace {
  metadata?: { name?: string; labels?: Record<string, string> | null; resourceVersion?: string } | null;
}

/** The annotation the agent keeps on each pod it redirects, and its values. */
export const REDIRECTION_ANNOTATION = 'ambient.istio.io/redirection';
export const REDIRECTION_ENABLED = 'enabled';
export const REDIRECTION_PENDING = 'pending';

export const podName = (p: AmbientPod): string => p.metadata?.name ?? '';
export const podNamespace = (p: AmbientPod): string => p.metadata?.namespace ?? '';
export const podUid = (p: AmbientPod): string => p.metadata?.uid ?? '';
export const podRef = (p: AmbientPod): string => `${podNamespace(p)}/${podName(p)}`;

/** Annotation `enabled`: the agent finished redirecting the pod. */
export function fullyEnrolled(p: AmbientPod): boolean {
  return p.metadata?.annotations?.[REDIRECTION_ANNOTATION] === REDIRECTION_ENABLED;
}

/** Annotation `pending`: rules are in, but ztunnel has not taken the pod yet. */
export function partiallyEnrolled(p: AmbientPod): boolean {
  return p.metadata?.annotations?.[REDIRECTION_ANNOTATION] === REDIRECTION_PENDING;
}

/** ztunnel itself is never captured: label app=ztunnel in the system namespace. */
export function isZtunnelPod(systemNamespace: string, p: AmbientPod): boolean {
  return podNamespace(p) === systemNamespace && p.metadata?.labels?.app === 'ztunnel';
}

/** Succeeded or Failed, or done for good (a pod that may not restart and has stopped). */
export function isTerminal(p: AmbientPod): boolean {
  const phase = p.status?.phase;
  return phase === 'Succeeded' || phase === 'Failed';
}

/**
 * status.podIPs, else status.podIP, parsed and unmapped (as netip.Addr.Unmap). Addresses that
 * do not parse are left out (upstream would panic on them).
 */
export function podIPs(p: AmbientPod): IpAddr[] {
  const texts = p.status?.podIPs?.length ? p.status.podIPs.map((x) => x.ip ?? '') : p.status?.podIP ? [p.status.podIP] : [];
  return texts.map((t) => parseIp(t)).filter((a): a is IpAddr => a !== undefined).map(unmap);
}

export const ipKey = (a: IpAddr): string => formatIp(unmap(a));

export function sameIPs(a: readonly IpAddr[], b: readonly IpAddr[]): boolean {
  const x = a.map(ipKey).sort();
  const y = b.map(ipKey).sort();
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

export function workloadOf(p: AmbientPod): WorkloadInfo {
  return { name: podName(p), namespace: podNamespace(p), serviceAccount: p.spec?.serviceAccountName ?? '' };
}
