// A list+watch informer for the node agent: a local cache of one resource filtered by field and
// label selectors, kept current by a watch, with add/update/delete callbacks. It follows
// client-go's reflector where that matters for correctness:
// - the first list (paged) fills the cache; "synced" resolves after it;
// - the watch starts at the list's resourceVersion, asks for bookmarks, and is re-opened at the
//   last version seen whenever the server ends it (its timeoutSeconds);
// - 410 Gone (on the watch or as an ERROR event) means the version is too old: list again, and
//   the cache is replaced, emitting deletes for objects that disappeared meanwhile;
// - any other failure is retried with an exponential back-off (800 ms doubling to 30 s, as
//   client-go's), reset once a list succeeds.
import type { Logger } from '../log/logger';
import { KubeError, statusError, statusMessage } from './errors';
import { RestClient } from './rest';

/** What the informer logs through: the project's Logger (src/log sits below kube/, it imports nothing above). */
export type InformerLog = Logger;

/** Resolves after `ms`, or at once (false) when the signal aborts. */
function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false);
    const onAbort = () => (clearTimeout(t), resolve(false));
    const t = setTimeout(() => (signal.removeEventListener('abort', onAbort), resolve(true)), ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

export interface KubeObject {
  metadata?: { name?: string; namespace?: string; uid?: string; resourceVersion?: string } | null;
}

export interface InformerHandlers<T> {
  add?(obj: T): void;
  update?(oldObj: T, newObj: T): void;
  delete?(obj: T): void;
}

export interface InformerOptions {
  /** Collection path, e.g. /api/v1/pods (all namespaces). */
  resourcePath: string;
  fieldSelector?: string;
  labelSelector?: string;
  log: InformerLog;
  /** Items per list page; default 500 (client-go's). */
  pageSize?: number;
  /** Server-side watch timeout; default a random 300-600 s, as client-go picks it. */
  watchTimeoutSeconds?: () => number;
  /** Back-off bounds after a failure; default 800 ms .. 30 s. */
  backoffMinMs?: number;
  backoffMaxMs?: number;
}

export function objectKey(o: KubeObject): string {
  const m = o.metadata ?? {};
  return m.namespace ? `${m.namespace}/${m.name ?? ''}` : (m.name ?? '');
}

class GoneError extends Error {}

interface ListPage {
  metadata?: { resourceVersion?: string; continue?: string };
  items?: unknown[];
}

export class Informer<T extends KubeObject> {
  private readonly store = new Map<string, T>();
  private readonly handlers: InformerHandlers<T>[] = [];
  private resourceVersion = '';
  private syncedFlag = false;
  private liveFlag = false;
  private resolveSynced!: () => void;
  /** Resolves after the first complete list has been delivered to the handlers. */
  readonly synced: Promise<void> = new Promise((r) => (this.resolveSynced = r));
  /** Counters for tests and logs. */
  readonly stats = { lists: 0, watches: 0, events: 0, relistsAfterGone: 0, failures: 0 };

  constructor(
    private readonly api: RestClient,
    private readonly opts: InformerOptions,
  ) {}

  /**
   * Adds a handler. As client-go's AddEventHandler, a handler added after objects are cached is
   * first told about each of them as an add, so a late subscriber misses nothing.
   */
  addHandler(h: InformerHandlers<T>): void {
    this.handlers.push(h);
    for (const o of this.store.values()) this.emitTo(h, (x) => x.add?.(o));
  }

  hasSynced(): boolean {
    return this.syncedFlag;
  }

  /**
   * True from a successful list until the next list or watch failure: the cache follows the
   * server. While it is false (backing off, listing again) the cache may be stale.
   */
  isLive(): boolean {
    return this.liveFlag;
  }

  get(key: string): T | undefined {
    return this.store.get(key);
  }

  list(): T[] {
    return [...this.store.values()];
  }

  /** Runs until the signal aborts; never rejects for API failures (they are logged and retried). */
  async run(signal: AbortSignal): Promise<void> {
    const min = this.opts.backoffMinMs ?? 800;
    const max = this.opts.backoffMaxMs ?? 30_000;
    let delay = min;
    let relist = true;
    while (!signal.aborted) {
      try {
        if (relist) {
          await this.listAndReplace(signal);
          relist = false;
          delay = min;
        }
        const gotEvents = await this.watchOnce(signal);
        // A watch the server ends at once, again and again, must not become a busy loop.
        if (!gotEvents && !signal.aborted) await pause(min, signal);
      } catch (e) {
        this.liveFlag = false;
        if (signal.aborted) break;
        relist = true;
        if (e instanceof GoneError) {
          this.stats.relistsAfterGone++;
          this.opts.log.info(`${this.opts.resourcePath}: watch expired (${e.message}); listing again`);
          continue;
        }
        this.stats.failures++;
        this.opts.log.warn(`${this.opts.resourcePath}: list/watch failed; retrying in ${delay} ms`, { error: (e as Error).message });
        if (!(await pause(delay, signal))) break;
        delay = Math.min(delay * 2, max);
      }
    }
    this.liveFlag = false; // stopped: nothing follows the server any more
  }

  private selectors(): Record<string, string | undefined> {
    return { fieldSelector: this.opts.fieldSelector, labelSelector: this.opts.labelSelector };
  }

  private async listAndReplace(signal: AbortSignal): Promise<void> {
    this.stats.lists++;
    const items: T[] = [];
    let cont: string | undefined;
    let rv = '';
    let paged = true;
    for (;;) {
      const r = await this.api.request('GET', this.opts.resourcePath, {
        query: { ...this.selectors(), ...(paged ? { limit: this.opts.pageSize ?? 500, continue: cont } : {}) },
        signal,
      });
      if (r.status === 410 && cont !== undefined) {
        // The continue token expired between pages: list again in one go.
        items.length = 0;
        cont = undefined;
        paged = false;
        continue;
      }
      if (r.status !== 200) throw statusError(`list ${this.opts.resourcePath}`, r);
      const page = (r.body ?? {}) as ListPage;
      if (!Array.isArray(page.items)) throw new KubeError(`list ${this.opts.resourcePath}: the answer has no items`);
      items.push(...(page.items as T[]));
      rv = page.metadata?.resourceVersion ?? '';
      cont = page.metadata?.continue || undefined;
      if (!paged || cont === undefined) break;
    }
    this.replace(items);
    this.resourceVersion = rv;
    this.liveFlag = true;
    if (!this.syncedFlag) {
      this.syncedFlag = true;
      this.resolveSynced();
    }
  }

  /** The cache becomes `items`: adds, updates, and deletes for what is gone. */
  private replace(items: T[]): void {
    const seen = new Set<string>();
    for (const o of items) {
      const key = objectKey(o);
      seen.add(key);
      const old = this.store.get(key);
      this.store.set(key, o);
      if (old) this.emit((h) => h.update?.(old, o));
      else this.emit((h) => h.add?.(o));
    }
    for (const [key, old] of [...this.store]) {
      if (seen.has(key)) continue;
      this.store.delete(key);
      this.emit((h) => h.delete?.(old));
    }
  }

  private emit(f: (h: InformerHandlers<T>) => void): void {
    for (const h of this.handlers) this.emitTo(h, f);
  }

  private emitTo(h: InformerHandlers<T>, f: (h: InformerHandlers<T>) => void): void {
    try {
      f(h);
    } catch (e) {
      this.opts.log.error(`${this.opts.resourcePath}: event handler failed`, { error: (e as Error).message });
    }
  }

  /** One watch from the current resourceVersion; true when at least one event arrived. */
  private async watchOnce(signal: AbortSignal): Promise<boolean> {
    this.stats.watches++;
    const timeout = this.opts.watchTimeoutSeconds?.() ?? Math.floor(300 * (1 + Math.random()));
    let got = false;
    try {
      await this.api.watch(this.opts.resourcePath, {
        query: { ...this.selectors(), resourceVersion: this.resourceVersion, allowWatchBookmarks: true, timeoutSeconds: timeout },
        signal,
        idleTimeoutMs: (timeout + 30) * 1000,
        onEvent: (ev) => {
          got = true;
          this.stats.events++;
          this.apply(ev.type, ev.object);
        },
      });
    } catch (e) {
      if (e instanceof KubeError && e.status === 410) throw new GoneError(e.message);
      throw e;
    }
    return got;
  }

  private apply(type: string, object: unknown): void {
    if (type === 'ERROR') {
      const code = (object as { code?: unknown } | null)?.code;
      const m = statusMessage(object);
      if (code === 410) throw new GoneError(m || 'resource version too old');
      throw new KubeError(
        `watch ${this.opts.resourcePath}: ERROR event${code !== undefined ? ` ${String(code)}` : ''}${m ? ` (${m})` : ''}`,
        typeof code === 'number' ? code : undefined,
      );
    }
    const o = object as T;
    const rv = o?.metadata?.resourceVersion;
    if (type === 'BOOKMARK') {
      if (rv) this.resourceVersion = rv;
      return;
    }
    if (typeof o !== 'object' || o === null || !o.metadata?.name) {
      throw new KubeError(`watch ${this.opts.resourcePath}: ${type} event without an object name`);
    }
    const key = objectKey(o);
    const old = this.store.get(key);
    switch (type) {
      case 'ADDED':
      case 'MODIFIED':
        this.store.set(key, o);
        if (old) this.emit((h) => h.update?.(old, o));
        else this.emit((h) => h.add?.(o));
        break;
      case 'DELETED':
        this.store.delete(key);
        this.emit((h) => h.delete?.(old ?? o));
        break;
      default:
        this.opts.log.debug(`${this.opts.resourcePath}: ignoring watch event of type ${type}`);
        return;
    }
    if (rv) this.resourceVersion = rv;
  }
}
