// The fast path's view of this node's pods (the agent's shared watch, node-pods.ts), so that an
// ADD is answered without a GET to the API server (Istio's plugin GETs the pod on every ADD).
// The cache answers only when it is sure: its watch is live (a failed watch may have missed changes) and the cached
// pod has the UID the runtime gave in CNI_ARGS (K8S_POD_UID), so a pod deleted and created again
// under the same name is never mistaken for the old one. Anything else falls through to the GET,
// with its retries, exactly as before.
import { KubeClient } from '../kube/client';
import { Pod } from '../kube/pod';
import { PodView } from './node-pods';

export interface PodCacheStats {
  hits: number;
  misses: number;
}

/** The fast path's lookups, over the agent's shared watch of the node's pods (node-pods.ts). */
export class NodePodCache {
  readonly stats: PodCacheStats = { hits: 0, misses: 0 };

  constructor(
    /** Every pod of the node: the fast path may be asked about any of them. */
    readonly pods: PodView,
    private readonly count: (result: 'hit' | 'miss') => void = () => undefined,
  ) {}

  /** The pod, when the cache can vouch for it; undefined means "ask the API". */
  lookup(namespace: string, name: string, uid: string): Pod | undefined {
    const pod = uid !== '' && this.pods.isLive() ? this.pods.get(`${namespace}/${name}`) : undefined;
    if (pod && pod.metadata?.uid === uid) {
      this.stats.hits++;
      this.count('hit');
      return pod;
    }
    this.stats.misses++;
    this.count('miss');
    return undefined;
  }
}

/** `client` with getPod answered from `cache` when the caller's UID lets it vouch for the pod. */
export function withPodCache(client: KubeClient, cache: Pick<NodePodCache, 'lookup'>): KubeClient {
  return {
    getPod: (namespace, name, uid = '') => {
      const pod = cache.lookup(namespace, name, uid);
      return pod ? Promise.resolve(pod) : client.getPod(namespace, name);
    },
    ...(client.getNamespace ? { getNamespace: client.getNamespace.bind(client) } : {}),
  };
}
