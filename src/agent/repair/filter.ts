// Which pods the repair controller acts on (Istio's repair controller, matchesFilter): pods
// whose CNI validation init container keeps failing because the node's CNI chain did not run
// our plugin for them. Pure functions of the pod and the settings.
import { Pod } from '../../kube/pod';

export interface FilterSettings {
  /** Only pods carrying this annotation (any value); "" = every pod. */
  sidecarAnnotation: string;
  /** Only init containers of this name; "" = any init container. */
  initContainerName: string;
  /** Expected termination message (compared trimmed); "" = any. */
  initTerminationMsg: string;
  /** Expected exit code; 0 = any. */
  initExitCode: number;
}

const has = (o: Record<string, string> | null | undefined, k: string): boolean => !!o && Object.prototype.hasOwnProperty.call(o, k);

/** True when the pod looks broken by a CNI race and should be repaired, deleted or labelled. */
export function matchesFilter(pod: Pod, s: FilterSettings): boolean {
  if (s.sidecarAnnotation !== '' && !has(pod.metadata?.annotations, s.sidecarAnnotation)) return false;
  const wantMsg = s.initTerminationMsg.trim();
  for (const c of pod.status?.initContainerStatuses ?? []) {
    if (s.initContainerName !== '' && c?.name !== s.initContainerName) continue;
    // A container that is now terminated successfully is never treated as broken, whatever
    // happened before: a pod that failed and then recovered must be left alone.
    const now = c.state?.terminated;
    if (now && (now.reason === 'Completed' || (now.exitCode ?? 0) === 0)) continue;
    const last = c.lastState?.terminated;
    if (!last) continue;
    const msgOk = wantMsg === '' || wantMsg === (last.message ?? '').trim();
    const codeOk = s.initExitCode === 0 || s.initExitCode === (last.exitCode ?? 0);
    if (msgOk && codeOk) return true;
  }
  return false;
}

/** spec.nodeName=<node> always (even empty, as upstream), after any extra field selectors. */
export function repairFieldSelector(extra: string, nodeName: string): string {
  return [...(extra !== '' ? [extra] : []), `spec.nodeName=${nodeName}`].join(',');
}
