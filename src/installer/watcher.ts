// A one-shot change detector over files and directories (inotify through fs.watch), shaped like
// Istio's util.Watcher: create it, check state, then wait for the first change.
//
// Unlike fsnotify in upstream, a wait can also end on a poll timer: paths that did not exist when
// the watcher was made (a net dir created later, a bin dir mounted late) are then still noticed,
// and a lost inotify event can delay a re-check by at most one poll period instead of forever.
import * as fs from 'node:fs';
import { Logger, nullLogger } from '../log/logger';

export class AbortedError extends Error {
  override name = 'AbortedError';
  constructor(readonly reason: unknown) {
    super(reason instanceof Error ? reason.message : `aborted: ${String(reason)}`);
  }
}

export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new AbortedError(signal.reason);
}

/** Resolves after `ms`, or rejects with AbortedError as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new AbortedError(signal.reason));
    const onAbort = () => {
      clearTimeout(t);
      reject(new AbortedError(signal!.reason));
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export type WaitResult = 'event' | 'poll';

export interface FileWatcher {
  /** True once any watched path changed since the watcher was created. */
  readonly changed: boolean;
  /** The paths actually watched (missing ones are skipped). */
  readonly watching: readonly string[];
  /**
   * Resolves on the next change (immediately if one arrived since the last wait) or when the poll
   * timer fires. Each change is consumed by one wait, like a receive from fsnotify's channel.
   */
  wait(signal?: AbortSignal): Promise<WaitResult>;
  close(): void;
}

export interface WatchOptions {
  log?: Logger;
  /** Upper bound on one wait; 0 = wait for an event only. */
  pollMs?: number;
}

export function createFileWatcher(paths: readonly string[], opts: WatchOptions = {}): FileWatcher {
  const log = opts.log ?? nullLogger;
  const pollMs = opts.pollMs ?? 0;
  const watchers: fs.FSWatcher[] = [];
  const watching: string[] = [];
  let changed = false; // sticky: any change since creation
  let pending = false; // consumed by wait()
  let wake: (() => void) | undefined;
  const onChange = (what: string) => {
    if (!pending) log.debug('file modified', { path: what });
    changed = true;
    pending = true;
    wake?.();
  };
  for (const p of paths) {
    try {
      const w = fs.watch(p, { persistent: false }, (_event, name) => onChange(name ? `${p}/${name}` : p));
      w.on('error', (err) => {
        log.warn('file watch error; treating it as a change', { path: p, error: String(err) });
        onChange(p);
      });
      watchers.push(w);
      watching.push(p);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') log.info('file watcher skipping non-existent path', { path: p });
      else throw e;
    }
  }
  let closed = false;
  return {
    get changed() {
      return changed;
    },
    watching,
    wait(signal?: AbortSignal): Promise<WaitResult> {
      if (signal?.aborted) return Promise.reject(new AbortedError(signal.reason));
      if (pending) {
        pending = false;
        return Promise.resolve('event');
      }
      return new Promise<WaitResult>((resolve, reject) => {
        let timer: NodeJS.Timeout | undefined;
        const done = () => {
          wake = undefined;
          if (timer) clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
        };
        const onAbort = () => {
          done();
          reject(new AbortedError(signal!.reason));
        };
        wake = () => {
          done();
          pending = false;
          resolve('event');
        };
        if (pollMs > 0) {
          timer = setTimeout(() => {
            done();
            resolve('poll');
          }, pollMs);
        }
        signal?.addEventListener('abort', onAbort, { once: true });
        if (closed) {
          done();
          reject(new AbortedError('watcher closed'));
        }
      });
    },
    close() {
      closed = true;
      for (const w of watchers) w.close();
    },
  };
}
