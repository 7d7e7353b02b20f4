// The pods of this node, kept current by a list+watch, so that the CNI fast path answers an ADD
// without a GET to the API server (Istio's plugin GETs the pod on every ADD). The cache answers
// only when it is sure: its watch is live (a failed watch may have missed changes) and the cached
// pod has the UID the runtime gave in CNI_ARGS (K8S_POD_UID), so a pod deleted and created again
// under the same name is never mistaken for the old one. Anything else falls through to the GET,
// with its retries, exactly as before.
import { Logger } from '../log/logger';
import { KubeClient } from '../kube/client';
import { Informer, InformerOptions } from '../kube/informer';
import { Pod } from '../kube/pod';
import { RestClient } from '../kube/rest';

export interface PodCacheStats {
  hits: number;
  misses: number;
}

export class NodePodCache {
  readonly informer: Informer<Pod>;
  readonly stats: PodCacheStats = { hits: 0, misses: 0 };
  private readonly ac = new AbortController();
  private running?: Promise<void>;

  constructor(
    private readonly api: RestClient,
    readonly nodeName: string,
    log: Logger,
    private readonly count: (result: 'hit' | 'miss') => void = () => undefined,
    tuning: Partial<Pick<InformerOptions, 'pageSize' | 'watchTimeoutSeconds' | 'backoffMinMs' | 'backoffMaxMs'>> = {},
  ) {
    if (nodeName === '') throw new Error('the pod cache needs the node name (NODE_NAME)');
    this.informer = new Informer<Pod>(api, {
      resourcePath: '/api/v1/pods',
      fieldSelector: `spec.nodeName=${nodeName}`,
      log,
      ...tuning,
    });
  }

  start(): this {
    this.running ??= this.informer.run(this.ac.signal);
    return this;
  }

  async stop(): Promise<void> {
    this.ac.abort();
    await this.running;
    this.api.close();
  }

  /** The pod, when the cache can vouch for it; undefined means "ask the API". */
  lookup(namespace: string, name: string, uid: string): Pod | undefined {
    const pod = uid !== '' && this.informer.isLive() ? this.informer.get(`${namespace}/${name}`) : undefined;
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
