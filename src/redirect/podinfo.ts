// What the plugin's decisions and the redirect read from a Pod: container names (init and
// regular, so native sidecars count), labels, annotations, and from the istio-proxy container
// its literal env values, its proxy type (args "proxy <type>") and its own securityContext
// runAsUser/runAsGroup (the pod-level securityContext is not consulted, as upstream).
import { Pod } from '../kube/pod';

export const ISTIO_PROXY = 'istio-proxy';
export const ISTIO_INIT = 'istio-init';

export interface PodInfo {
  readonly name: string;
  readonly namespace: string;
  readonly containers: ReadonlySet<string>;
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
  /** args[1] of istio-proxy when args[0] is "proxy"; "" otherwise. */
  readonly proxyType: string;
  /** istio-proxy env, literal values only (valueFrom reads as ""). */
  readonly proxyEnv: ReadonlyMap<string, string>;
  /** istio-proxy securityContext.runAsUser / runAsGroup; undefined when unset. */
  readonly proxyUid?: number;
  readonly proxyGid?: number;
}

function stringMap(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return out;
  for (const [k, x] of Object.entries(v)) if (typeof x === 'string') out[k] = x;
  return out;
}

const num = (v: unknown): number | undefined => (typeof v === 'number' ? v : undefined);

export function extractPodInfo(pod: Pod): PodInfo {
  const containers = new Set<string>();
  const proxyEnv = new Map<string, string>();
  let proxyType = '';
  let proxyUid: number | undefined;
  let proxyGid: number | undefined;
  const all = [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])];
  for (const c of all) {
    if (typeof c?.name !== 'string') continue;
    containers.add(c.name);
    if (c.name !== ISTIO_PROXY) continue;
    for (const e of c.env ?? []) {
      if (typeof e?.name === 'string') proxyEnv.set(e.name, typeof e.value === 'string' ? e.value : '');
    }
    const args = Array.isArray(c.args) ? c.args : [];
    if (args.length >= 2 && args[0] === 'proxy' && typeof args[1] === 'string') proxyType = args[1];
    if (c.securityContext) {
      proxyUid = num(c.securityContext.runAsUser);
      proxyGid = num(c.securityContext.runAsGroup);
    }
  }
  return {
    name: pod.metadata?.name ?? '',
    namespace: pod.metadata?.namespace ?? '',
    containers,
    labels: stringMap(pod.metadata?.labels),
    annotations: stringMap(pod.metadata?.annotations),
    proxyType,
    proxyEnv,
    ...(proxyUid !== undefined ? { proxyUid } : {}),
    ...(proxyGid !== undefined ? { proxyGid } : {}),
  };
}

/** Go's strconv.ParseBool: undefined when the text is none of its spellings. */
export function parseGoBool(s: string): boolean | undefined {
  if (['1', 't', 'T', 'true', 'TRUE', 'True'].includes(s)) return true;
  if (['0', 'f', 'F', 'false', 'FALSE', 'False'].includes(s)) return false;
  return undefined;
}
