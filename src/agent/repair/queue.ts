// A keyed work queue with one worker, as the controllers upstream use: a key waits at most once;
// a key added while it is being worked on runs again afterwards; a failing key is retried with
// exponential back-off until it has failed `maxAttempts` times in a row (the repair controller
// uses 5), then dropped until the next event for it.
import { Logger } from '../../log/logger';

export interface QueueOptions {
  maxAttempts: number;
  /** First retry delay, doubled each time; default 5 ms (client-go's per-item limiter). */
  baseDelayMs?: number;
  /** Retry delay cap; default 1000 s (client-go's). */
  maxDelayMs?: number;
  log: Logger;
  name: string;
}

export class WorkQueue {
  private readonly pending: string[] = [];
  private readonly queued = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private processing: string | undefined;
  private dirty = false;
  private wake: (() => void) | undefined;
  private idleWaiters: (() => void)[] = [];
  private closed = false;

  constructor(
    private readonly work: (key: string) => Promise<void>,
    private readonly opts: QueueOptions,
  ) {}

  add(key: string): void {
    if (this.closed) return;
    if (this.processing === key) {
      this.dirty = true;
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.pending.push(key);
    this.wake?.();
  }

  /** Times the key has failed in a row (0 after a success). */
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

  /** Works keys one at a time until the signal aborts. */
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
        const key = this.pending.shift();
        if (key === undefined) {
          this.notifyIdle();
          await new Promise<void>((r) => (this.wake = r));
          this.wake = undefined;
          continue;
        }
        this.queued.delete(key);
        this.processing = key;
        this.dirty = false;
        try {
          await this.work(key);
          this.failures.delete(key);
        } catch (e) {
          this.retry(key, e as Error);
        }
        this.processing = undefined;
        if (this.dirty) this.add(key);
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
      this.notifyIdle();
    }
  }

  private retry(key: string, err: Error): void {
    const n = (this.failures.get(key) ?? 0) + 1;
    if (n >= this.opts.maxAttempts) {
      this.failures.delete(key);
      this.opts.log.error(`${this.opts.name}: giving up on ${key} after ${n} attempts`, { error: err.message });
      return;
    }
    this.failures.set(key, n);
    const delay = Math.min((this.opts.baseDelayMs ?? 5) * 2 ** (n - 1), this.opts.maxDelayMs ?? 1_000_000);
    this.opts.log.warn(`${this.opts.name}: ${key} failed (attempt ${n} of ${this.opts.maxAttempts}), retrying in ${delay} ms`, {
      error: err.message,
    });
    const t = setTimeout(() => {
      this.timers.delete(t);
      this.add(key);
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
