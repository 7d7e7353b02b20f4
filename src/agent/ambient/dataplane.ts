// Enrolling pods in ambient mode and taking them out again (Istio: net_linux.go NetServer and
// meshdataplane_linux.go). Adding a pod:
//   1. remember its UID (so a ztunnel connecting now hears of it);
//   2. open its netns: the CNI event's path (under the host mount), else the one cached, else
//      look for it in /proc; failure is final for this attempt (non-retryable);
//   3. in-pod rules (one nft transaction replacing the three istio-ambient-* tables) and the mark
//      routing, inside the pod netns; failure is final (non-retryable);
//   4. ZDS Add to the newest ztunnel with the netns fd, and wait for its ack; failure (no
//      ztunnel, no ack) marks the pod `pending` and is retried by the controller;
//   5. the pod's addresses into the host probe sets (kubelet's probes get SNATed);
//   6. annotation ambient.istio.io/redirection=enabled, through the status subresource.
// Removing: probe addresses, in-pod rules (not when the pod is being deleted: its netns goes
// away with it), ZDS Del to every ztunnel, the annotation.
//
// Work on one pod is serialised (a CNI event and an informer event for the same pod never
// interleave); different pods proceed at the same time.
import { PodOverrides, podOverridesFromAnnotations } from '../../ambient/config';
import { Logger } from '../../log/logger';
import { IpAddr, parseIp } from '../../net/ip';
import { NetnsHandle, NetnsOpenError, NetnsRef } from '../../netns/handle';
import { EnrolledPods } from './enrolled-pods';
import { REDIRECTION_ENABLED, REDIRECTION_PENDING, ipKey, workloadOf } from './pods';
import { Pod, podIPs, podRef, podUid } from '../../kube/pod';
import { HostProbeSets } from './host-probes';
import { ZtunnelServer } from './ztunnel-server';

/** An add that retrying cannot fix (no netns, rules refused, bad annotation): not retried. */
export class NonRetryableAddError extends Error {
  override readonly name = 'NonRetryableAddError';
  constructor(
    message: string,
    override readonly cause?: unknown,
  ) {
    super(message);
  }
}

/** The in-pod half, applied in the pod's held netns (netnsPodRules: through the dataplane port). */
export interface PodRules {
  apply(netns: NetnsRef, overrides: PodOverrides): Promise<void>;
  remove(netns: NetnsRef): Promise<void>;
}

export type AnnotationValue = typeof REDIRECTION_ENABLED | typeof REDIRECTION_PENDING | null;

export interface DataplaneDeps {
  readonly log: Logger;
  readonly cache: EnrolledPods;
  readonly rules: PodRules;
  readonly hostSets: HostProbeSets;
  /** The ZDS server; set once it exists. */
  zds?: ZtunnelServer;
  /** Sets (or with null removes) the pod's redirection annotation; a missing pod is no error for null. */
  readonly annotate: (pod: Pod, value: AnnotationValue) => Promise<void>;
  /** Looks for running pods' netns in the host's /proc (UID -> IPs of each pod wanted). */
  readonly findNetns: (wanted: ReadonlyMap<string, readonly IpAddr[]>) => Promise<Map<string, NetnsHandle>>;
  /** Where the host's file system is mounted (CNI netns paths are host paths): "/host". */
  readonly hostRoot: string;
  /** AMBIENT_RECONCILE_POD_RULES_ON_STARTUP. */
  readonly reconcileOnStart: boolean;
}

/** What the dataplane did (tests, benchmark). */
export interface DataplaneStats {
  rulesApplied: number;
  rulesRemoved: number;
  adds: number;
  removes: number;
}

export class MeshDataplane {
  private readonly locks = new Map<string, Promise<void>>();
  /** UIDs enrolled by this process (or found enrolled at start), with the addresses they hold. */
  private readonly enrolled = new Map<string, string[]>();
  readonly stats: DataplaneStats = { rulesApplied: 0, rulesRemoved: 0, adds: 0, removes: 0 };

  constructor(private readonly d: DataplaneDeps) {}

  setZds(zds: ZtunnelServer): void {
    this.d.zds = zds;
  }

  /** Whether this agent has the pod fully enrolled. */
  isEnrolled(uid: string): boolean {
    return this.enrolled.has(uid);
  }

  enrolledCount(): number {
    return this.enrolled.size;
  }

  private async locked<T>(uid: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(uid) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const chain = prev.then(() => mine);
    this.locks.set(uid, chain);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.locks.get(uid) === chain) this.locks.delete(uid);
    }
  }

  private hostPath(netnsPath: string): string {
    return this.d.hostRoot && this.d.hostRoot !== '/' ? `${this.d.hostRoot.replace(/\/+$/, '')}${netnsPath}` : netnsPath;
  }

  private async netnsFor(pod: Pod, ips: readonly IpAddr[], netnsPath: string): Promise<NetnsHandle> {
    const uid = podUid(pod);
    if (netnsPath !== '') {
      return this.d.cache.upsert(uid, workloadOf(pod), NetnsHandle.open(this.hostPath(netnsPath)));
    }
    const cached = this.d.cache.get(uid);
    if (cached) return cached;
    this.d.log.debug('pod netns not cached; looking for it in /proc', { pod: podRef(pod) });
    const found = await this.d.findNetns(new Map([[uid, ips]]));
    const h = found.get(uid);
    for (const [u, other] of found) if (u !== uid) other.release();
    if (!h) throw new Error(`cannot find the netns of pod ${podRef(pod)} (fine for a pod that is just being created)`);
    return this.d.cache.upsert(uid, workloadOf(pod), h);
  }

  /**
   * Enrolls the pod. `netnsPath` is the CNI event's netns (a host path), or '' to use the cached
   * one or find it in /proc. Rejects with NonRetryableAddError, or another error to retry.
   */
  addPodToMesh(pod: Pod, ips: readonly IpAddr[], netnsPath: string): Promise<void> {
    const uid = podUid(pod);
    if (uid === '') return Promise.reject(new NonRetryableAddError(`pod ${podRef(pod)} has no UID`));
    return this.locked(uid, () => this.add(pod, uid, ips, netnsPath));
  }

  private async add(pod: Pod, uid: string, ips: readonly IpAddr[], netnsPath: string): Promise<void> {
    const log = this.d.log;
    const ref = podRef(pod);
    log.info('adding pod to the mesh', { pod: ref, uid, netns: netnsPath || undefined });
    this.stats.adds++;
    this.d.cache.ensure(uid);
    let netns: NetnsHandle;
    let overrides: PodOverrides;
    try {
      netns = await this.netnsFor(pod, ips, netnsPath);
      overrides = podOverridesFromAnnotations(pod.metadata?.annotations ?? {}, (m) => log.warn(m, { pod: ref }));
      await this.d.rules.apply(netns, overrides);
      this.stats.rulesApplied++;
    } catch (e) {
      this.d.cache.take(uid)?.release();
      this.enrolled.delete(uid);
      const why = e instanceof NetnsOpenError ? e.message : (e as Error).message;
      log.error('pod not added to the mesh (not retried)', { pod: ref, error: why });
      throw new NonRetryableAddError(`pod ${ref}: ${why}`, e);
    }

    // From here on a failure leaves the rules in place and is retried: the pod stays known, so a
    // removal still takes the rules out, and a ztunnel that connects later gets it in its snapshot.
    try {
      if (!this.d.zds) throw new Error('no ztunnel connection (the ZDS server is not running)');
      await this.d.zds.podAdded(uid, workloadOf(pod), netns);
    } catch (e) {
      log.error('failed to add pod to ztunnel: pod partially added, annotating with pending status', { pod: ref, error: (e as Error).message });
      await this.d.annotate(pod, REDIRECTION_PENDING).catch((e2) => log.warn('cannot annotate pod as pending', { pod: ref, error: (e2 as Error).message }));
      throw e;
    }
    const held = await this.d.hostSets.add(uid, ips).catch((e) => {
      log.error('failed to add pod to the host probe set; its health checks will fail', { pod: ref, error: (e as Error).message });
      throw e;
    });
    await this.d.annotate(pod, REDIRECTION_ENABLED);
    this.enrolled.set(uid, held.map(ipKey));
    log.info('pod added to the mesh', { pod: ref, uid });
  }

  /** Takes the pod out of the mesh; `isDelete`: the pod is gone (its netns with it). */
  removePodFromMesh(pod: Pod, isDelete: boolean): Promise<void> {
    const uid = podUid(pod);
    return this.locked(uid, () => this.remove(pod, uid, isDelete));
  }

  private async remove(pod: Pod, uid: string, isDelete: boolean): Promise<void> {
    const log = this.d.log;
    const ref = podRef(pod);
    log.info('removing pod from the mesh', { pod: ref, uid, deleted: isDelete });
    this.stats.removes++;
    // Every address held for this UID, whatever the pod object says now.
    const held = [...this.d.hostSets.entries()].filter(([, owner]) => owner === uid).map(([ip]) => ip);
    const ips = [...podIPs(pod), ...held.map((k) => parseIp(k)!)];
    await this.d.hostSets.remove(uid, ips);

    const netns = this.d.cache.take(uid);
    if (!isDelete) {
      if (netns) {
        try {
          await this.d.rules.remove(netns);
          this.stats.rulesRemoved++;
        } catch (e) {
          // Keep the netns so that the retry can take the rules out.
          this.d.cache.upsert(uid, workloadOf(pod), netns);
          throw new Error(`pod ${ref}: failed to delete in-pod rules: ${(e as Error).message}`);
        }
      } else {
        log.warn('pod netns already gone, not deleting in-pod rules', { pod: ref });
      }
    }
    try {
      if (this.d.zds) await this.d.zds.podDeleted(uid);
    } finally {
      netns?.release();
    }
    this.enrolled.delete(uid);
    try {
      await this.d.annotate(pod, null);
    } catch (e) {
      log.error('failed to remove the redirection annotation', { pod: ref, error: (e as Error).message });
      if (!isDelete) throw e;
    }
  }

  /** The pod got new IPs while enrolled: put them in the probe sets. */
  syncHostProbeIPSet(pod: Pod, ips: readonly IpAddr[]): Promise<void> {
    const uid = podUid(pod);
    return this.locked(uid, async () => {
      const held = await this.d.hostSets.add(uid, ips);
      if (this.enrolled.has(uid)) this.enrolled.set(uid, held.map(ipKey));
    });
  }

  /**
   * At start, for the pods already annotated `enabled`: re-sync the probe sets (prune skipped if
   * some pod has no IP yet), find each pod's netns in /proc for the ztunnel snapshot, and with
   * reconcile mode re-apply the in-pod rules. Nothing is re-applied otherwise.
   */
  async constructInitialSnapshot(pods: readonly Pod[]): Promise<void> {
    const log = this.d.log;
    const keep = new Set<string>();
    let incomplete = false;
    for (const pod of pods) {
      const ips = podIPs(pod);
      if (ips.length === 0) {
        log.warn('enrolled pod has no IP yet; the probe set is not pruned this time', { pod: podRef(pod) });
        incomplete = true;
        continue;
      }
      try {
        const held = await this.d.hostSets.add(podUid(pod), ips);
        for (const ip of held) keep.add(ipKey(ip));
        this.enrolled.set(podUid(pod), held.map(ipKey));
      } catch (e) {
        log.error('pod addresses not added to the probe set; its health checks will fail', { pod: podRef(pod), error: (e as Error).message });
      }
    }
    if (!incomplete) {
      const stale = await this.d.hostSets.prune(keep);
      if (stale.length > 0) log.info('stale probe addresses removed', { addresses: stale.join(',') });
    }

    const wanted = new Map<string, IpAddr[]>();
    for (const pod of pods) {
      this.d.cache.ensure(podUid(pod));
      if (!this.enrolled.has(podUid(pod))) this.enrolled.set(podUid(pod), []);
      wanted.set(podUid(pod), podIPs(pod));
    }
    const found = await this.d.findNetns(wanted);
    const byUid = new Map(pods.map((p) => [podUid(p), p]));
    for (const [uid, h] of found) this.d.cache.upsert(uid, workloadOf(byUid.get(uid)!), h);
    log.info('initial snapshot built', { pods: pods.length, netnsFound: found.size });

    if (this.d.reconcileOnStart) {
      for (const pod of pods) {
        const h = this.d.cache.get(podUid(pod));
        if (!h) continue;
        try {
          await this.d.rules.apply(
            h,
            podOverridesFromAnnotations(pod.metadata?.annotations ?? {}, (m) => log.warn(m, { pod: podRef(pod) })),
          );
          this.stats.rulesApplied++;
        } catch (e) {
          log.error('failed to reconcile in-pod rules; restart the pod, or take it out of the mesh and back', {
            pod: podRef(pod),
            error: (e as Error).message,
          });
        }
      }
    }
  }
}
