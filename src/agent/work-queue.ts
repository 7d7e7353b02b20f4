// The agent's one work queue, with one worker, in the shape of client-go's rate-limited queues
// the controllers upstream use. Items carry an optional key:
// - keyed (repair: the pod's namespace/name): a key waits at most once; a key added while it is
//   being worked on runs again afterwards; failures are counted per key;
// - unkeyed (ambient: each informer event with its old and new object): every item is worked,
//   in order, and carries its own failure count.
// A failing item is retried after an exponential back-off (baseDelayMs doubling up to
// maxDelayMs, client-go's per-item limiter) and, with `rate`, no faster than `qps` retries a
// second beyond a burst (client-go's bucket limiter, ambient's); after `maxAttempts` failures in
// a row (repair: 5, ambient: unlimited) it is dropped until it is added again.
import { Logger } from '../log/logger';

export interface QueueOptions<T> {
  /** Failures in a row before an item is dropped; default unlimited. */
  maxAttempts?: number;
  /** First retry delay, doubled each time; default 5 ms. */
  baseDelayMs?: number;
  /** Retry delay cap; default 1000 s (client-go's). */
  maxDelayMs?: number;
  /** Token bucket shared by all retries; default none. */
  rate?: { qps: number; burst: number };
  /** Items with the same key are one item (see above); default: every item is its own. */
  key?: (item: T) => string;
  /** How logs name an item; default its key. */
  describe?: (item: T) => string;
  log: Logger;
  name: string;
}

interface Entry<T> {
  key: string;
  item: T;
}

export class WorkQueue<T = string> {
  private readonly pending: Entry<T>[] = [];
  private readonly queued = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private processing: Entry<T> | undefined;
  private dirty: T | undefined;
  private wake: (() => void) | undefined;
  private idleWaiters: (() => void)[] = [];
  private closed = false;
  private seq = 0;
  private tokens: number;
  private refilledAt = Date.now();

  constructor(
    private readonly work: (item: T) => Promise<void>,
    private readonly opts: QueueOptions<T>,
  ) {
    this.tokens = opts.rate?.burst ?? 0;
  }

  add(item: T): void {
    this.enqueue(this.opts.key ? this.opts.key(item) : `#${this.seq++}`, item);
  }

  private enqueue(key: string, item: T): void {
    if (this.closed) return;
    if (this.processing?.key === key && this.opts.key) {
      this.dirty = item;
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.pending.push({ key, item });
    this.wake?.();
  }

  /** Times the item's key has failed in a row (0 after a success). */
  failureCount(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /** True when nothing is queued, running or waiting for a retry. */
  isIdle(): boolean {
    return this.pending.length === 0 && this.processing === undefined && this.timers.size === 0;
  }

  /** Resolves the next time the queue is idle (at once when it is). */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /** Works items one at a time until the signal aborts. */
  async run(signal: AbortSignal): Promise<void> {
    const onAbort = () => {
      this.closed = true;
      for (const t of this.timers) clearTimeout(t);
      this.timers.clear();
      this.wake?.();
    };
    if (signal.aborted) onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      while (!this.closed) {
        const e = this.pending.shift();
        if (e === undefined) {
          this.notifyIdle();
          await new Promise<void>((r) => (this.wake = r));
          this.wake = undefined;
          continue;
        }
        this.queued.delete(e.key);
        this.processing = e;
        this.dirty = undefined;
        try {
          await this.work(e.item);
          this.failures.delete(e.key);
        } catch (err) {
          this.retry(e, err as Error);
        }
        this.processing = undefined;
        if (this.dirty !== undefined) this.enqueue(e.key, this.dirty);
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
      this.notifyIdle();
    }
  }

  /** Delay the token bucket imposes on one more retry (0 without `rate`). */
  private bucketDelay(): number {
    const r = this.opts.rate;
    if (!r) return 0;
    const now = Date.now();
    this.tokens = Math.min(r.burst, this.tokens + ((now - this.refilledAt) / 1000) * r.qps);
    this.refilledAt = now;
    this.tokens -= 1;
    return this.tokens >= 0 ? 0 : (-this.tokens / r.qps) * 1000;
  }

  private retry(e: Entry<T>, err: Error): void {
    const n = (this.failures.get(e.key) ?? 0) + 1;
    const max = this.opts.maxAttempts ?? Infinity;
    const what = this.opts.describe?.(e.item) ?? e.key;
    if (n >= max) {
      this.failures.delete(e.key);
      this.opts.log.error(`${this.opts.name}: giving up on ${what} after ${n} attempts`, { error: err.message });
      return;
    }
    this.failures.set(e.key, n);
    const backoff = Math.min((this.opts.baseDelayMs ?? 5) * 2 ** (n - 1), this.opts.maxDelayMs ?? 1_000_000);
    const delay = Math.max(backoff, this.bucketDelay());
    this.opts.log.warn(`${this.opts.name}: ${what} failed (attempt ${n}${Number.isFinite(max) ? ` of ${max}` : ''}), retrying in ${Math.round(delay)} ms`, {
      error: err.message,
    });
    const t = setTimeout(() => {
      this.timers.delete(t);
      this.enqueue(e.key, e.item);
    }, delay);
    this.timers.add(t);
  }

  private notifyIdle(): void {
    if (!this.isIdle()) return;
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const r of w) r();
  }
}
