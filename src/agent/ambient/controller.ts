// The ambient controller (Istio: nodeagent/informers.go): pods on this node and all namespaces,
// watched; every change becomes an event in one queue, worked by one worker, retried forever on
// failure with back-off (5 ms doubling to 5 s per event, and no faster than 10 a second beyond a
// burst of 100, as upstream's rate limiter).
//
// - Namespace added, or its labels changed whether it matches the enablement selectors: each of
//   its pods (not ztunnel) is looked at again.
// - Pod updated (read again from the cache): remove it if it was enrolled and has terminated;
//   re-sync its probe addresses if they changed; enroll or un-enroll it when that changed (a
//   `pending` pod is always retried).
// - Pod deleted: taken out if it was or should have been enrolled.
import { EnablementSelectorLike, namespaceMatchesEnablement, podMatchesEnablement } from '../../ambient/enablement';
import { Logger } from '../../log/logger';
import { Informer, InformerOptions } from '../../kube/informer';
import { RestClient } from '../../kube/rest';
import { NodePods, PodView } from '../node-pods';
import { WorkQueue } from '../work-queue';
import { MeshDataplane, NonRetryableAddError } from './dataplane';
import { fullyEnrolled, isTerminal, isZtunnelPod, partiallyEnrolled, sameIPs } from './pods';
import { Namespace, Pod, podIPs, podName, podNamespace, podRef, podUid } from '../../kube/pod';

type Kind = 'pod' | 'namespace';
type EventType = 'add' | 'update' | 'delete';

interface QueuedEvent {
  readonly kind: Kind;
  readonly type: EventType;
  readonly old?: Pod | Namespace;
  readonly obj: Pod | Namespace;
}

export interface ControllerOptions {
  readonly api: RestClient;
  readonly nodeName: string;
  readonly systemNamespace: string;
  readonly selectors: readonly EnablementSelectorLike[];
  readonly excludeNamespaces: readonly string[];
  readonly dataplane: MeshDataplane;
  readonly log: Logger;
  /** Counted per event type (nodeagent_reconcile_events_total). */
  readonly onEvent?: (type: EventType) => void;
  /** For tests: informer tuning and retry timings. */
  readonly informer?: Partial<InformerOptions>;
  /** The agent's shared watch of this node's pods; without it the controller watches them itself. */
  readonly pods?: NodePods;
  readonly retry?: { baseMs?: number; maxMs?: number; qps?: number; burst?: number };
}

export class AmbientController {
  /** Every pod of the node (enablement is decided per event, with the namespace's labels). */
  readonly pods: PodView;
  private readonly ownPods?: Informer<Pod>;
  readonly namespaces: Informer<Namespace>;
  private readonly queue: WorkQueue<QueuedEvent>;
  private readonly excluded: Set<string>;

  constructor(private readonly o: ControllerOptions) {
    this.excluded = new Set(o.excludeNamespaces);
    this.namespaces = new Informer<Namespace>(o.api, { resourcePath: '/api/v1/namespaces', log: o.log, ...o.informer });
    // Every event is its own item (it carries the objects it is about); retried forever.
    this.queue = new WorkQueue<QueuedEvent>((ev) => this.reconcile(ev), {
      name: 'ambient events',
      log: o.log,
      describe: (ev) => `${ev.kind} ${ev.type} ${ev.kind === 'pod' ? podRef(ev.obj as Pod) : (ev.obj.metadata?.name ?? '')}`,
      baseDelayMs: o.retry?.baseMs ?? 5,
      maxDelayMs: o.retry?.maxMs ?? 5000,
      rate: { qps: o.retry?.qps ?? 10, burst: o.retry?.burst ?? 100 },
    });
    const enqueue = (kind: Kind) => ({
      add: (obj: Pod | Namespace) => this.queue.add({ kind, type: 'add', obj }),
      update: (old: Pod | Namespace, obj: Pod | Namespace) => this.queue.add({ kind, type: 'update', old, obj }),
      delete: (obj: Pod | Namespace) => this.queue.add({ kind, type: 'delete', obj }),
    });
    if (o.pods) {
      this.pods = o.pods.subscribe(() => true, enqueue('pod'));
    } else {
      this.ownPods = new Informer<Pod>(o.api, { resourcePath: '/api/v1/pods', fieldSelector: `spec.nodeName=${o.nodeName}`, log: o.log, ...o.informer });
      this.ownPods.addHandler(enqueue('pod'));
      this.pods = this.ownPods;
    }
    this.namespaces.addHandler(enqueue('namespace'));
  }

  /** Starts the namespace informer (and its own pod informer) and resolves once both lists are in. */
  async startInformers(signal: AbortSignal): Promise<void> {
    void this.ownPods?.run(signal);
    void this.namespaces.run(signal);
    const aborted = new Promise<never>((_, reject) =>
      signal.addEventListener('abort', () => reject(new Error('stopped before the informers synced')), { once: true }),
    );
    await Promise.race([Promise.all([this.pods.synced, this.namespaces.synced]), aborted]);
  }

  /** Starts working the events queued so far and those to come. */
  runQueue(signal: AbortSignal): Promise<void> {
    return this.queue.run(signal);
  }

  /** Resolves when no event is queued, in work or waiting for a retry. */
  idle(): Promise<void> {
    return this.queue.idle();
  }

  shouldBeEnabled(pod: Pod, nsLabels: Record<string, string> | null | undefined): boolean {
    return podMatchesEnablement(this.o.selectors, pod, nsLabels) && !this.excluded.has(podNamespace(pod));
  }

  /**
   * The pod, if it is in the caches and matches the selectors (Istio's GetPodIfAmbientEnabled).
   * Throws when pod or namespace is not cached; undefined when it is but does not match.
   */
  getPodIfAmbientEnabled(name: string, namespace: string): Pod | undefined {
    const ns = this.namespaces.get(namespace);
    if (!ns) throw new Error(`namespace ${namespace} not found in the informer cache`);
    const pod = this.pods.get(`${namespace}/${name}`);
    if (!pod) throw new Error(`pod ${namespace}/${name} not found in the informer cache`);
    return podMatchesEnablement(this.o.selectors, pod, ns.metadata?.labels) ? pod : undefined;
  }

  /** Pods the agent enrolled before it (re)started: not ztunnel, not terminated, annotated `enabled`. */
  activeAmbientPodSnapshot(): Pod[] {
    return this.pods.list().filter((p) => !isZtunnelPod(this.o.systemNamespace, p) && !isTerminal(p) && fullyEnrolled(p));
  }

  private async reconcile(ev: QueuedEvent): Promise<void> {
    this.o.onEvent?.(ev.type);
    if (ev.kind === 'namespace') return this.reconcileNamespace(ev);
    return this.reconcilePod(ev);
  }

  private reconcileNamespace(ev: QueuedEvent): void {
    const ns = ev.obj as Namespace;
    const name = ns.metadata?.name ?? '';
    if (ev.type === 'update') {
      const before = namespaceMatchesEnablement(this.o.selectors, (ev.old as Namespace).metadata?.labels);
      const now = namespaceMatchesEnablement(this.o.selectors, ns.metadata?.labels);
      if (before === now) return;
    } else if (ev.type !== 'add') {
      return;
    }
    const matches = namespaceMatchesEnablement(this.o.selectors, ns.metadata?.labels);
    if (matches && this.excluded.has(name)) {
      this.o.log.warn('namespace is labeled for ambient but excluded by EXCLUDE_NAMESPACES; its pods will not be enrolled', { namespace: name });
    } else {
      this.o.log.info(matches ? 'namespace is enabled in ambient mesh' : 'namespace is not in ambient mesh', { namespace: name });
    }
    for (const pod of this.pods.list()) {
      if (podNamespace(pod) !== name || isZtunnelPod(this.o.systemNamespace, pod)) continue;
      this.queue.add({ kind: 'pod', type: 'update', old: pod, obj: pod });
    }
  }

  private async reconcilePod(ev: QueuedEvent): Promise<void> {
    const evPod = ev.obj as Pod;
    const ref = podRef(evPod);
    const ns = this.namespaces.get(podNamespace(evPod));
    if (!ns) {
      this.o.log.error('namespace of the pod not found; event skipped', { pod: ref });
      return;
    }
    const dp = this.o.dataplane;
    switch (ev.type) {
      case 'add':
        // The CNI plugin's event (or, for pods that already run, the start-up snapshot) enrolls.
        return;
      case 'update': {
        const current = this.pods.get(`${podNamespace(evPod)}/${podName(evPod)}`);
        if (!current) {
          this.o.log.debug('update skipped: the pod no longer exists', { pod: ref });
          return;
        }
        const old = ev.old as Pod;
        // What this agent did itself counts too: the cache may not show its own patch yet.
        const enrolled = fullyEnrolled(current) || dp.isEnrolled(podUid(current));
        const partial = partiallyEnrolled(current) && !dp.isEnrolled(podUid(current));
        const matches = podMatchesEnablement(this.o.selectors, current, ns.metadata?.labels);
        const excluded = this.excluded.has(podNamespace(current));
        const should = matches && !excluded;
        const terminated = isTerminal(current);
        const change = enrolled !== should || partial;
        if (matches && excluded && (enrolled || partial)) {
          this.o.log.warn('pod is enrolled but its namespace is excluded by EXCLUDE_NAMESPACES; removing it from the mesh', { pod: ref });
        }
        if ((enrolled || partial) && terminated) {
          // The old object: Kubernetes may already have cleared the terminated pod's IPs.
          await dp.removePodFromMesh(old, true);
          return;
        }
        if (enrolled && should && !terminated) {
          const ips = podIPs(current);
          if (ips.length > 0 && !sameIPs(ips, podIPs(old))) await dp.syncHostProbeIPSet(current, ips);
        }
        if (!change || terminated) return;
        if (!should) {
          await dp.removePodFromMesh(current, false);
          return;
        }
        const ips = podIPs(current);
        if (ips.length === 0) {
          this.o.log.debug('pod has no IP yet; enrollment waits', { pod: ref });
          return;
        }
        try {
          await dp.addPodToMesh(current, ips, '');
        } catch (e) {
          if (e instanceof NonRetryableAddError) {
            this.o.log.error('failed to capture the pod; not retried', { pod: ref, error: e.message });
            return;
          }
          throw e;
        }
        return;
      }
      case 'delete':
        if (
          fullyEnrolled(evPod) ||
          partiallyEnrolled(evPod) ||
          dp.isEnrolled(podUid(evPod)) ||
          podMatchesEnablement(this.o.selectors, evPod, ns.metadata?.labels)
        ) {
          await dp.removePodFromMesh(evPod, true);
        }
        return;
    }
  }
}
