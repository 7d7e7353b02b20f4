// The one list+watch of this node's pods (spec.nodeName=<node>), owned by the agent (agent.ts
// starts it once and stops it on shutdown) and shared by every consumer: the fast path's pod
// cache, the repair controller and the ambient controller. Each consumer subscribes with its own
// filter and sees its pods exactly as if it had its own watch with that selector: a pod that
// starts matching arrives as an add, one that stops matching leaves as a delete, get() and
// list() show only matching pods. One list and one watch per node instead of three; the
// reflector behaviour (paging, 410 relist, timeout resume, bookmarks) is src/kube/informer.ts.
//
// Why one watch serves all: all three want the same server-side selector (spec.nodeName of this
// node, no label selector); ambient's enablement (namespace and pod labels) and repair's
// REPAIR_LABEL_SELECTORS / REPAIR_FIELD_SELECTORS are evaluated here, on the cached pods, with
// the API server's selector grammar (src/kube/selectors.ts). Only a REPAIR_NODE_NAME naming
// another node needs a watch of its own.
import { Logger } from '../log/logger';
import { Informer, InformerHandlers, InformerOptions } from '../kube/informer';
import { Pod } from '../kube/pod';
import { RestClient } from '../kube/rest';

/** What a consumer reads: the informer's view, narrowed to the pods its filter selects. */
export interface PodView {
  /** Resolves once the first complete list is in. */
  readonly synced: Promise<void>;
  hasSynced(): boolean;
  /** The watch follows the server (false while backing off or listing again). */
  isLive(): boolean;
  /** By namespace/name; undefined when not cached or not selected. */
  get(key: string): Pod | undefined;
  list(): Pod[];
}

export type NodePodsTuning = Partial<Pick<InformerOptions, 'pageSize' | 'watchTimeoutSeconds' | 'backoffMinMs' | 'backoffMaxMs'>>;

export class NodePods {
  readonly informer: Informer<Pod>;
  private readonly ac = new AbortController();
  private running?: Promise<void>;

  constructor(
    private readonly api: RestClient,
    /** '' watches only pods bound to no node (as upstream does without a node name). */
    readonly nodeName: string,
    log: Logger,
    tuning: NodePodsTuning = {},
  ) {
    this.informer = new Informer<Pod>(api, { resourcePath: '/api/v1/pods', fieldSelector: `spec.nodeName=${nodeName}`, log, ...tuning });
  }

  /** Starts the list+watch (once). */
  start(): this {
    this.running ??= this.informer.run(this.ac.signal);
    return this;
  }

  /** Stops the watch and closes the connections. */
  async stop(): Promise<void> {
    this.ac.abort();
    await this.running;
    this.api.close();
  }

  /**
   * A consumer's view of the pods `filter` selects, and its handlers (optional), called as a
   * watch with that selector would deliver events. Pods already cached are delivered as adds.
   */
  subscribe(filter: (pod: Pod) => boolean = () => true, handlers: InformerHandlers<Pod> = {}): PodView {
    const inf = this.informer;
    inf.addHandler({
      add: (o) => filter(o) && handlers.add?.(o),
      update: (old, o) => {
        const was = filter(old);
        const is = filter(o);
        if (was && is) handlers.update?.(old, o);
        else if (is) handlers.add?.(o);
        else if (was) handlers.delete?.(o);
      },
      delete: (o) => filter(o) && handlers.delete?.(o),
    });
    return {
      synced: inf.synced,
      hasSynced: () => inf.hasSynced(),
      isLive: () => inf.isLive(),
      get: (key) => {
        const p = inf.get(key);
        return p && filter(p) ? p : undefined;
      },
      list: () => inf.list().filter(filter),
    };
  }
}
