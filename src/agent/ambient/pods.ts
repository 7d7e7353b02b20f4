// The facts the ambient agent derives from a pod (Istio's cni/pkg/util/podutil.go and
// kube.CheckPodTerminal). The Pod type and its plain accessors are src/kube/pod.ts.
import { Pod, podName, podNamespace } from '../../kube/pod';
import { IpAddr, formatIp, unmap } from '../../net/ip';
import { WorkloadInfo } from '../../zds/messages';

/** The annotation the agent keeps on each pod it redirects, and its values. */
export const REDIRECTION_ANNOTATION = 'ambient.istio.io/redirection';
export const REDIRECTION_ENABLED = 'enabled';
export const REDIRECTION_PENDING = 'pending';

/** Annotation `enabled`: the agent finished redirecting the pod. */
export function fullyEnrolled(p: Pod): boolean {
  return p.metadata?.annotations?.[REDIRECTION_ANNOTATION] === REDIRECTION_ENABLED;
}

/** Annotation `pending`: rules are in, but ztunnel has not taken the pod yet. */
export function partiallyEnrolled(p: Pod): boolean {
  return p.metadata?.annotations?.[REDIRECTION_ANNOTATION] === REDIRECTION_PENDING;
}

/** ztunnel itself is never captured: label app=ztunnel in the system namespace. */
export function isZtunnelPod(systemNamespace: string, p: Pod): boolean {
  return podNamespace(p) === systemNamespace && p.metadata?.labels?.app === 'ztunnel';
}

/** Succeeded or Failed, or done for good (a pod that may not restart and has stopped). */
export function isTerminal(p: Pod): boolean {
  const phase = p.status?.phase;
  return phase === 'Succeeded' || phase === 'Failed';
}

export const ipKey = (a: IpAddr): string => formatIp(unmap(a));

export function sameIPs(a: readonly IpAddr[], b: readonly IpAddr[]): boolean {
  const x = a.map(ipKey).sort();
  const y = b.map(ipKey).sort();
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

export function workloadOf(p: Pod): WorkloadInfo {
  return { name: podName(p), namespace: podNamespace(p), serviceAccount: p.spec?.serviceAccountName ?? '' };
}
