// The host side of ambient mode: the rule that SNATs kubelet's probes to enrolled pods, and the
// probe address sets it matches (`inet istio-ambient-nat`, `istio-inpod-probes-v4`/`-v6`, each
// element a pod address with the pod UID as comment). Istio: meshdataplane_linux.go and
// cni/pkg/addressset.
//
// The agent keeps a mirror of the sets (address -> UID), read from the kernel once at start and
// kept up to date by its own changes, so removing an address "only if it still belongs to this
// pod" needs no `nft list` per pod. Changes that arrive while an nft run is under way are applied
// together in the next run (one transaction), which is what lets many enrollments at once share
// host round trips. If a combined run fails, its changes are retried one by one so one bad
// change cannot hold up the others.
//
// Differences from upstream: at start the sets are reconciled (missing addresses added, stale
// ones pruned) rather than flushed and refilled, so probes of running pods keep working across
// an agent restart; an address already held under another UID is re-owned (deleted and added
// with the new UID in one transaction) instead of silently keeping the old comment.
import { buildHostSetup, deleteHostRules } from '../../ambient/build';
import { AmbientConfig, HostRuleParams } from '../../ambient/config';
import { ProbeSets, addProbeAddress, deleteProbeAddress, destroyProbeSets, probeSetName } from '../../ambient/probe-sets';
import { HOST_TABLE_REF } from '../../ambient/tables';
import { Logger } from '../../log/logger';
import { IpAddr, parseIp } from '../../net/ip';
import type { NetnsRef } from '../../netns/handle';
import type { DataplanePort } from '../../netns/port';
import { Op } from '../../nft/transaction';
import { PodUid, parsePodUid } from '../../values/typed';
import { ipKey } from './pods';

/** What the probe sets need of the dataplane port: in-place changes, and a listing of the sets. */
export type HostPort = Pick<DataplanePort, 'update' | 'listSets'>;

interface Change {
  readonly ops: Op[];
  resolve(): void;
  reject(e: Error): void;
}

export interface HostSetupRetry {
  readonly attempts: number;
  readonly intervalMs: number;
}

export class HostProbeSets {
  /** Address (canonical text) -> pod UID, as in the kernel. */
  private readonly mirror = new Map<string, string>();
  private readonly sets: ProbeSets;
  private pending: Change[] = [];
  private running = false;
  /** nft runs made (for tests and the benchmark). */
  runs = 0;

  constructor(
    private readonly cfg: AmbientConfig,
    private readonly host: HostRuleParams,
    private readonly port: HostPort,
    /** The node's netns, held by the agent for its life. */
    private readonly netns: NetnsRef,
    private readonly log: Logger,
  ) {
    this.sets = { prefix: host.probeIPSetName, ipv6: cfg.enableIPv6 };
  }

  /**
   * Creates the sets (kept when they exist) and (re)writes the host rule, retrying as upstream
   * does (10 times, 2 s apart), then reads the sets' current elements into the mirror.
   */
  async setup(retry: HostSetupRetry = { attempts: 10, intervalMs: 2000 }, sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))): Promise<void> {
    const setup = buildHostSetup(this.cfg, this.host);
    for (let attempt = 1; ; attempt++) {
      try {
        await this.port.update(this.netns, setup);
        this.runs++;
        break;
      } catch (e) {
        if (attempt >= retry.attempts) throw new Error(`host rules for health checks: ${(e as Error).message}`);
        this.log.warn('host rules for health checks not applied; retrying', { attempt, error: (e as Error).message });
        await sleep(retry.intervalMs);
      }
    }
    await this.reload();
  }

  /** Reads the sets' elements from the kernel into the mirror. */
  async reload(): Promise<void> {
    const sets = await this.port.listSets(this.netns, HOST_TABLE_REF);
    this.mirror.clear();
    for (const name of [probeSetName(this.sets, 4), ...(this.sets.ipv6 ? [probeSetName(this.sets, 6)] : [])]) {
      for (const e of sets.get(name) ?? []) {
        const a = parseIp(e.value);
        if (a) this.mirror.set(ipKey(a), e.comment);
      }
    }
  }

  /** Addresses in the sets, with the UID each belongs to. */
  entries(): Map<string, string> {
    return new Map(this.mirror);
  }

  /** The UID an address is held for, if any. */
  owner(ip: IpAddr): string | undefined {
    return this.mirror.get(ipKey(ip));
  }

  private v6Skipped(ip: IpAddr): boolean {
    return ip.family === 6 && !this.sets.ipv6;
  }

  /**
   * Adds the pod's addresses (IPv6 ones only with AMBIENT_IPV6). An address held by another UID
   * is re-owned. Returns the addresses now held for the pod.
   */
  async add(uid: string, ips: readonly IpAddr[]): Promise<IpAddr[]> {
    const comment: PodUid = parsePodUid('pod UID', uid);
    const ops: Op[] = [];
    const held: IpAddr[] = [];
    for (const ip of dedupe(ips)) {
      if (this.v6Skipped(ip)) continue;
      held.push(ip);
      const owner = this.mirror.get(ipKey(ip));
      if (owner === uid) continue;
      if (owner !== undefined) {
        this.log.warn('probe address re-owned', { ip: ipKey(ip), from: owner, to: uid });
        ops.push(...deleteProbeAddress(this.sets, ip));
      }
      ops.push(...addProbeAddress(this.sets, ip, comment));
    }
    if (ops.length > 0) await this.submit(ops);
    for (const ip of held) this.mirror.set(ipKey(ip), uid);
    return held;
  }

  /**
   * Removes the pod's addresses, but only those held for this UID (an address reused by a newer
   * pod stays; a warning names its owner), as Istio's ClearEntriesWithIPAndComment.
   */
  async remove(uid: string, ips: readonly IpAddr[]): Promise<void> {
    const ops: Op[] = [];
    const gone: string[] = [];
    for (const ip of dedupe(ips)) {
      const key = ipKey(ip);
      const owner = this.mirror.get(key);
      if (owner === undefined) continue;
      if (owner !== uid) {
        this.log.warn('probe address not removed: it belongs to another pod', { ip: key, uid, owner });
        continue;
      }
      ops.push(...deleteProbeAddress(this.sets, ip));
      gone.push(key);
    }
    if (ops.length > 0) await this.submit(ops);
    for (const k of gone) this.mirror.delete(k);
  }

  /** Removes every address not in `keep` (canonical texts). */
  async prune(keep: ReadonlySet<string>): Promise<string[]> {
    const stale = [...this.mirror.keys()].filter((k) => !keep.has(k));
    const ops = stale.flatMap((k) => deleteProbeAddress(this.sets, parseIp(k)!));
    if (ops.length > 0) await this.submit(ops);
    for (const k of stale) this.mirror.delete(k);
    return stale;
  }

  /** Agent shutdown without upgrade: the host rule, then the sets (the whole host table). */
  async destroy(): Promise<void> {
    await this.port.update(this.netns, deleteHostRules());
    await this.port.update(this.netns, destroyProbeSets());
    this.mirror.clear();
  }

  private submit(ops: Op[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ ops, resolve, reject });
      if (!this.running) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.running = true;
    try {
      while (this.pending.length > 0) {
        const batch = this.pending;
        this.pending = [];
        try {
          this.runs++;
          await this.port.update(
            this.netns,
            batch.flatMap((c) => c.ops),
          );
          for (const c of batch) c.resolve();
        } catch (e) {
          if (batch.length === 1) {
            batch[0].reject(e as Error);
            continue;
          }
          // Find the change(s) at fault; the others still go in.
          for (const c of batch) {
            try {
              this.runs++;
              await this.port.update(this.netns, c.ops);
              c.resolve();
            } catch (e2) {
              c.reject(e2 as Error);
            }
          }
        }
      }
    } finally {
      this.running = false;
    }
  }
}

function dedupe(ips: readonly IpAddr[]): IpAddr[] {
  const seen = new Set<string>();
  return ips.filter((ip) => {
    const k = ipKey(ip);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}
