// The repair controller (Istio's cni/pkg/repair): watches the pods on this node and acts on
// those whose CNI validation init container keeps failing because the node's CNI chain did not
// run our plugin for them (a race with the node agent's install, or a primary CNI that rewrote
// the chain). One action, by precedence: repair (program the capture rules into the running
// pod), else delete (with UID + resourceVersion preconditions), else label (merge patch on the
// status subresource, the lower privilege). Metrics: istio_cni_repair_pods_repaired_total
// {type=repair|delete|label, result=success|skip|fail}. Events: DeleteBrokenPod /
// LabelBrokenPod, source cni-repair, best effort.
import { Logger } from '../../log/logger';
import { Informer, objectKey } from '../../kube/informer';
import { labelSelector, podFieldSelector } from '../../kube/selectors';
import { NodePods, NodePodsTuning, PodView } from '../node-pods';
import { podPath } from '../../kube/client';
import { Pod } from '../../kube/pod';
import { RestClient, statusError } from '../../kube/rest';
import { FilterSettings, matchesFilter, repairFieldSelector } from './filter';
import { WorkQueue } from '../work-queue';
import { PodRepairer } from './redirect';

export interface RepairControllerSettings extends FilterSettings {
  repairPods: boolean;
  deletePods: boolean;
  labelPods: boolean;
  labelKey: string;
  labelValue: string;
  /** The node whose pods are watched (spec.nodeName field selector). */
  nodeName: string;
  labelSelectors: string;
  fieldSelectors: string;
}

export type RepairType = 'repair' | 'delete' | 'label';
export type RepairResult = 'success' | 'skip' | 'fail';
export type RepairAction = RepairType | 'none';

/** The action the settings select (upstream precedence: repair > delete > label). */
export function repairAction(s: Pick<RepairControllerSettings, 'repairPods' | 'deletePods' | 'labelPods'>): RepairAction {
  if (s.repairPods) return 'repair';
  if (s.deletePods) return 'delete';
  if (s.labelPods) return 'label';
  return 'none';
}

export interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}

/**
 * Every API call the controller makes, as RBAC rules, for the configured action. The manifests
 * test holds the ClusterRoles of install/kubernetes/ to exactly these.
 */
export function repairApiRules(s: Pick<RepairControllerSettings, 'repairPods' | 'deletePods' | 'labelPods'>): PolicyRule[] {
  const rules: PolicyRule[] = [{ apiGroups: [''], resources: ['pods'], verbs: ['list', 'watch'] }];
  switch (repairAction(s)) {
    case 'delete':
      rules.push({ apiGroups: [''], resources: ['pods'], verbs: ['delete'] });
      rules.push({ apiGroups: [''], resources: ['events'], verbs: ['create'] });
      break;
    case 'label':
      rules.push({ apiGroups: [''], resources: ['pods/status'], verbs: ['patch'] });
      rules.push({ apiGroups: [''], resources: ['events'], verbs: ['create'] });
      break;
    default:
      // repair needs node privileges (netns, nft), no API rights beyond watching pods.
      break;
  }
  return rules;
}

export interface RepairControllerDeps {
  api: RestClient;
  log: Logger;
  /** Counts one outcome (istio_cni_repair_pods_repaired_total). */
  count(type: RepairType, result: RepairResult): void;
  /** Needed when repairPods is set. */
  repairer?: PodRepairer;
  /**
   * The agent's shared watch of this node's pods (when it watches the node repair looks at); the
   * controller then filters by its label and field selectors itself. Without it the controller
   * runs a watch of its own with those selectors.
   */
  pods?: NodePods;
  /** Tuning of its own watch (tests). */
  informer?: NodePodsTuning;
  queueBaseDelayMs?: number;
  now?: () => Date;
}

/** Upstream gives a key 5 attempts. */
export const REPAIR_MAX_ATTEMPTS = 5;
export const EVENT_SOURCE = 'cni-repair';

export class RepairController {
  /** The pods the controller looks at (its selectors applied). */
  readonly pods: PodView;
  /** The watch it runs itself, when it was not given the agent's. */
  private readonly own?: Informer<Pod>;
  readonly queue: WorkQueue;
  readonly action: RepairAction;
  /** Pods already repaired, by namespace/name -> UID: rules go in once per pod instance. */
  private readonly repaired = new Map<string, string>();
  private readonly log: Logger;

  constructor(
    private readonly s: RepairControllerSettings,
    private readonly deps: RepairControllerDeps,
  ) {
    this.log = deps.log;
    this.action = repairAction(s);
    if (this.action === 'repair' && !deps.repairer) throw new Error('repair controller: REPAIR_REPAIR_PODS needs a pod repairer');
    this.queue = new WorkQueue<string>((key) => this.reconcile(key), {
      key: (k) => k,
      maxAttempts: REPAIR_MAX_ATTEMPTS,
      baseDelayMs: deps.queueBaseDelayMs,
      log: deps.log,
      name: 'repair pods',
    });
    const enqueue = (p: Pod) => this.queue.add(objectKey(p));
    const handlers = { add: enqueue, update: (_o: Pod, n: Pod) => enqueue(n), delete: enqueue };
    if (deps.pods) {
      // Shared watch of spec.nodeName=<node>: the rest of the selectors, as the server would apply them.
      const labels = labelSelector(s.labelSelectors);
      const fields = podFieldSelector(s.fieldSelectors);
      this.pods = deps.pods.subscribe((p) => labels(p.metadata?.labels) && fields(p), handlers);
    } else {
      this.own = new Informer<Pod>(deps.api, {
        resourcePath: '/api/v1/pods',
        fieldSelector: repairFieldSelector(s.fieldSelectors, s.nodeName),
        labelSelector: s.labelSelectors || undefined,
        log: deps.log,
        ...deps.informer,
      });
      this.own.addHandler(handlers);
      this.pods = this.own;
    }
  }

  get fieldSelector(): string {
    return repairFieldSelector(this.s.fieldSelectors, this.s.nodeName);
  }

  /** Watches until the signal aborts; pods are worked on once the first list is in. */
  async run(signal: AbortSignal): Promise<void> {
    const informer = this.own?.run(signal);
    const aborted = new Promise<void>((r) => (signal.aborted ? r() : signal.addEventListener('abort', () => r(), { once: true })));
    await Promise.race([this.pods.synced, aborted]);
    const queue = signal.aborted ? Promise.resolve() : this.queue.run(signal);
    await Promise.all([informer, queue]);
  }

  async reconcile(key: string): Promise<void> {
    const pod = this.pods.get(key);
    if (!pod) {
      this.repaired.delete(key); // the pod is gone: forget it
      return;
    }
    await this.reconcilePod(pod);
  }

  async reconcilePod(pod: Pod): Promise<void> {
    if (!matchesFilter(pod, this.s)) return;
    this.log.debug(`reconciling pod ${objectKey(pod)}`);
    switch (this.action) {
      case 'repair':
        return this.repairPod(pod);
      case 'delete':
        return this.deletePod(pod);
      case 'label':
        return this.labelPod(pod);
      default:
        return;
    }
  }

  private async repairPod(pod: Pod): Promise<void> {
    const key = objectKey(pod);
    const uid = pod.metadata?.uid ?? '';
    // Every status change of the crash-looping pod brings an event; the rules only need to go
    // in once per pod instance (the next restart of the init container then passes).
    const done = this.repaired.get(key);
    if (done !== undefined) {
      if (done === uid) this.log.debug(`pod ${key} already repaired`);
      else this.log.error(`pod ${key} was repaired with UID ${done} but now has UID ${uid}; skipping`);
      return;
    }
    this.log.info(`pod ${key} detected as broken, repairing`);
    try {
      const r = await this.deps.repairer!.repair(pod);
      if (r.outcome === 'skipped') {
        this.log.info(`pod ${key} not repaired: ${r.reason}`);
        this.deps.count('repair', 'skip');
        return;
      }
      this.repaired.set(key, uid);
      this.log.info(`pod ${key} repaired`, { netns: r.netns, foundBy: r.via, tables: r.tables.join(',') });
      this.deps.count('repair', 'success');
    } catch (e) {
      this.log.error(`pod ${key}: repair failed`, { error: (e as Error).message });
      this.deps.count('repair', 'fail');
      throw e;
    }
  }

  private async deletePod(pod: Pod): Promise<void> {
    const m = pod.metadata ?? {};
    const key = objectKey(pod);
    this.log.info(`pod ${key} detected as broken, deleting`);
    const r = await this.call('DELETE', podPath(m.namespace ?? '', m.name ?? ''), {
      body: {
        kind: 'DeleteOptions',
        apiVersion: 'v1',
        // Delete exactly the object we judged, not a newer version or a namesake.
        preconditions: { uid: m.uid, resourceVersion: m.resourceVersion },
      },
    }).catch((e: Error) => e);
    if (r instanceof Error || (r.status !== 200 && r.status !== 202)) {
      const err = r instanceof Error ? r : statusError(`DELETE pod ${key}`, r);
      await this.event(pod, 'DeleteBrokenPod', `pod detected as broken, but failed to delete: ${err.message}`);
      this.deps.count('delete', 'fail');
      throw err;
    }
    await this.event(pod, 'DeleteBrokenPod', 'pod detected as broken, deleted');
    this.deps.count('delete', 'success');
  }

  private async labelPod(pod: Pod): Promise<void> {
    const m = pod.metadata ?? {};
    const key = objectKey(pod);
    if (m.labels && Object.prototype.hasOwnProperty.call(m.labels, this.s.labelKey)) {
      this.log.info(`pod ${key} already has label ${this.s.labelKey}, skipping`);
      this.deps.count('label', 'skip');
      return;
    }
    this.log.info(`pod ${key} detected as broken, labelling ${this.s.labelKey}=${this.s.labelValue}`);
    // A merge patch on the status subresource: it can change metadata too, and is the lower
    // privilege of the two that can.
    const r = await this.call('PATCH', `${podPath(m.namespace ?? '', m.name ?? '')}/status`, {
      body: { metadata: { labels: { [this.s.labelKey]: this.s.labelValue } } },
      contentType: 'application/merge-patch+json',
    }).catch((e: Error) => e);
    if (r instanceof Error || r.status !== 200) {
      const err = r instanceof Error ? r : statusError(`PATCH pod ${key}/status`, r);
      this.log.error(`pod ${key}: label failed`, { error: err.message });
      await this.event(pod, 'LabelBrokenPod', `pod detected as broken, but failed to label: ${err.message}`);
      this.deps.count('label', 'fail');
      throw err;
    }
    await this.event(pod, 'LabelBrokenPod', 'pod detected as broken, labeled');
    this.deps.count('label', 'success');
  }

  private call(method: string, p: string, opts: { body: unknown; contentType?: string }) {
    return this.deps.api.request(method, p, opts);
  }

  /** A Warning event on the pod; failures are logged, never fatal. */
  private async event(pod: Pod, reason: string, message: string): Promise<void> {
    const m = pod.metadata ?? {};
    const now = (this.deps.now?.() ?? new Date()).toISOString().replace(/\.\d{3}Z$/, 'Z');
    const body = {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name: `${m.name}.${Date.now().toString(16)}${Math.floor(Math.random() * 0xfff).toString(16)}`, namespace: m.namespace },
      involvedObject: { apiVersion: 'v1', kind: 'Pod', name: m.name, namespace: m.namespace, uid: m.uid, resourceVersion: m.resourceVersion },
      reason,
      message,
      type: 'Warning',
      source: { component: EVENT_SOURCE, host: this.s.nodeName || undefined },
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
      reportingComponent: EVENT_SOURCE,
      reportingInstance: this.s.nodeName || undefined,
    };
    try {
      const r = await this.deps.api.request('POST', `/api/v1/namespaces/${encodeURIComponent(m.namespace ?? '')}/events`, { body });
      if (r.status !== 201 && r.status !== 200) this.log.debug(`event ${reason} for ${objectKey(pod)} not recorded: ${statusError('POST event', r).message}`);
    } catch (e) {
      this.log.debug(`event ${reason} for ${objectKey(pod)} not recorded: ${(e as Error).message}`);
    }
  }
}
