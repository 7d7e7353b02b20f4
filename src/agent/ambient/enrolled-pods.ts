// The ambient agent's record of the pods it enrolled, keyed by pod UID: who the pod is (for
// ztunnel) and its open netns when known. It is what a ztunnel that connects is sent as its snapshot: an Add (with the
// fd) for each pod whose netns is open, a Keep for each pod that is enrolled but whose netns the
// agent could not find (so ztunnel keeps serving it rather than dropping it).
import { WorkloadInfo } from '../../zds/messages';
import { NetnsHandle } from '../../netns/handle';

export interface SnapshotEntry {
  readonly uid: string;
  readonly workload?: WorkloadInfo;
  /** Retained for the caller: release() it when done. */
  readonly netns?: NetnsHandle;
}

interface Entry {
  workload?: WorkloadInfo;
  netns?: NetnsHandle;
}

export class EnrolledPods {
  private readonly pods = new Map<string, Entry>();

  /** Marks the UID as enrolled without a netns (yet). */
  ensure(uid: string): void {
    if (!this.pods.has(uid)) this.pods.set(uid, {});
  }

  has(uid: string): boolean {
    return this.pods.has(uid);
  }

  get size(): number {
    return this.pods.size;
  }

  uids(): string[] {
    return [...this.pods.keys()];
  }

  /**
   * Records the pod's netns; takes ownership of `netns`. When the pod already has the same
   * namespace (same inode) open, the old handle is kept and the new one released; a different
   * namespace (the sandbox was re-created) replaces the old one. Returns the handle in use.
   */
  upsert(uid: string, workload: WorkloadInfo | undefined, netns: NetnsHandle): NetnsHandle {
    const old = this.pods.get(uid);
    if (old?.netns && old.netns.ino === netns.ino) {
      netns.release();
      this.pods.set(uid, { workload: workload ?? old.workload, netns: old.netns });
      return old.netns;
    }
    old?.netns?.release();
    this.pods.set(uid, { workload: workload ?? old?.workload, netns });
    return netns;
  }

  get(uid: string): NetnsHandle | undefined {
    return this.pods.get(uid)?.netns;
  }

  workload(uid: string): WorkloadInfo | undefined {
    return this.pods.get(uid)?.workload;
  }

  /** Removes the UID; the caller gets the cache's reference to its netns (release it). */
  take(uid: string): NetnsHandle | undefined {
    const e = this.pods.get(uid);
    this.pods.delete(uid);
    return e?.netns;
  }

  /** Every enrolled pod, in UID order; each netns retained for the caller. */
  snapshot(): SnapshotEntry[] {
    return [...this.pods.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([uid, e]) => ({ uid, workload: e.workload, netns: e.netns?.retain() }));
  }

  /** Releases every netns and forgets every pod. */
  clear(): void {
    for (const e of this.pods.values()) e.netns?.release();
    this.pods.clear();
  }
}
