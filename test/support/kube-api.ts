// The one local Kubernetes API stand-in of the tests (unit, agent, root, e2e) and benches, listening on 127.0.0.1 only, over TLS with a generated CA (or
// plain HTTP). Pods with GET, list (field/label selectors, paging) and watch (chunked stream of
// ADDED/MODIFIED/DELETED from a resourceVersion, ended at the client's timeoutSeconds, BOOKMARK
// events for clients that ask, 410 for versions and continue tokens it no longer holds),
// namespaces, the status subresource merge patch, delete with preconditions, and event creation.
// Fault modes for the plugin's fault-injection tests: answers held back (delayMs, gate), a body
// trickled byte by byte, one status for every request (failWith), and the listener closed
// (refuse) and reopened on the same port. It records every request (requests, requestLines) so
// tests can hold the client to the calls it is allowed to make.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Pod } from '../../src/kube/pod';
import { TestPki, istioKubeconfig, makePki } from './tls';
import { tempDir } from './tmp';

export interface Obj {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace: string;
    uid?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [k: string]: unknown;
  };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
  [k: string]: unknown;
}

export interface Recorded {
  method: string;
  path: string;
  query: Record<string, string>;
  contentType?: string;
  authorization?: string;
  body?: unknown;
  /** The bearer token was the one the stand-in accepts (always, without a token set). */
  authorized: boolean;
  /** The status answered, once the answer is complete. */
  status?: number;
}

interface Watcher {
  res: http.ServerResponse;
  field: string;
  label: string;
  timer?: NodeJS.Timeout;
  /** What the watch is on: pods (undefined) or namespaces. */
  kind?: 'Namespace';
  /** The client asked for BOOKMARK events (allowWatchBookmarks=true). */
  bookmarks: boolean;
}

type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

const key = (o: Obj) => `${o.metadata.namespace}/${o.metadata.name}`;
const isNamespace = (o: Obj) => o.kind === 'Namespace';
const clone = <T>(o: T): T => JSON.parse(JSON.stringify(o)) as T;

/** Field selectors on the paths this stand-in knows (spec.nodeName, metadata.*), ANDed. */
export function fieldMatches(sel: string, o: Obj): boolean {
  if (!sel) return true;
  return sel.split(',').every((term) => {
    const m = /^([^!=]+)(!=|==|=)(.*)$/.exec(term.trim());
    if (!m) throw new Error(`bad field selector term ${term}`);
    const [, k, op, v] = m;
    let actual: unknown;
    if (k === 'spec.nodeName') actual = o.spec?.nodeName ?? '';
    else if (k === 'metadata.name') actual = o.metadata.name;
    else if (k === 'metadata.namespace') actual = o.metadata.namespace;
    else if (k === 'status.phase') actual = o.status?.phase ?? '';
    else throw new Error(`field selector ${k} not supported`);
    return op === '!=' ? actual !== v : actual === v;
  });
}

/** Equality-based label selectors (k=v, k==v, k!=v, k, !k), ANDed. */
export function labelMatches(sel: string, o: Obj): boolean {
  if (!sel) return true;
  const labels = o.metadata.labels ?? {};
  return sel.split(',').every((term) => {
    const t = term.trim();
    const m = /^([^!=]+)(!=|==|=)(.*)$/.exec(t);
    if (!m) return t.startsWith('!') ? !(t.slice(1) in labels) : t in labels;
    const [, k, op, v] = m;
    return op === '!=' ? labels[k] !== v : labels[k] === v;
  });
}

export class KubeApiStandIn {
  readonly requests: Recorded[] = [];
  readonly events: Obj[] = [];
  private readonly pods = new Map<string, Obj>();
  /** Namespaces (kind Namespace), keyed by name; listed and watched at /api/v1/namespaces. */
  private readonly nsStore = new Map<string, Obj>();
  /** Every change, for watches that start from an older resourceVersion. */
  private readonly history: { rv: number; type: EventType; obj: Obj }[] = [];
  /** Watches from before this version get 410 Gone. */
  private oldestRv = 1;
  private rv = 1;
  private readonly watchers = new Set<Watcher>();
  private server!: http.Server;
  port = 0;
  /** Bearer token the API accepts; undefined = any. */
  token?: string;
  /** Items per list page when the client does not ask for fewer. */
  pageSize = 500;
  /** Answer the next requests matching with an error status. */
  readonly failures: { method: string; path: RegExp; status: number; times: number }[] = [];
  /** List pages served (for tests). */
  listPages = 0;
  /** Called as each list page is served (before it is sent): tests change the store between pages. */
  afterListPage?: (pages: number) => void;
  /** Ends a watch stream after this many ms even if the client asked for longer. */
  maxWatchMs = 60_000;
  /** Other objects (a DaemonSet, a Node), answered to a GET of exactly this path; delete to make them 404. */
  readonly objects = new Map<string, Obj>();

  // Fault modes (the plugin's fault-injection tests), applied before the token check and routing:
  /** Answer every request with this status and body instead (e.g. 503, or 403 echoing the token). */
  failWith?: { status: number; body: (authorization: string) => string; headers?: Record<string, string> };
  /** Hold every answer this long before sending it (a slow API server). */
  delayMs?: number;
  /** Hold every answer until this settles (the test decides when the API answers). */
  gate?: Promise<void>;
  /** Send the headers at once, then the body one byte every `trickleMs` (a stalled, not silent, server). */
  trickleMs?: number;
  /** A run dir holding istio-cni-kubeconfig for this stand-in (startApiStandIn makes it). */
  runDir = '';
  private readonly held = new Set<NodeJS.Timeout>();
  private readonly waiters: { n: number; resolve: () => void }[] = [];

  constructor(private readonly tls?: TestPki) {}

  /** The CA that signed the server's certificate (PEM); '' over plain HTTP. */
  get caPem(): string {
    return this.tls?.ca ?? '';
  }

  /** Every request as "METHOD /path[?query]", in order. */
  get requestLines(): string[] {
    return this.requests.map((r) => {
      const q = new URLSearchParams(r.query).toString();
      return `${r.method} ${r.path}${q ? `?${q}` : ''}`;
    });
  }

  /** Requests received (also those still held); resolves once there are at least `n`. */
  waitForRequests(n: number): Promise<void> {
    return this.requests.length >= n ? Promise.resolve() : new Promise((resolve) => this.waiters.push({ n, resolve }));
  }

  /** A pod as the plugin GETs it (stored as given, versioned), bound to `nodeName` when given (as the scheduler binds it). */
  addPod(pod: Pod, nodeName?: string): void {
    this.upsert({ ...pod, spec: { ...pod.spec, ...(nodeName ? { nodeName } : {}) } } as Obj);
  }

  /** Requests for one pod's path. */
  requestsFor(namespace: string, name: string): Recorded[] {
    return this.requests.filter((r) => r.path === `/api/v1/namespaces/${namespace}/pods/${name}`);
  }

  /** The files a pod's service account mount holds (token, ca.crt), which install-cni reads to write the plugin's kubeconfig. */
  writeServiceAccount(dir: string): void {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'token'), this.token ?? '', { mode: 0o600 });
    fs.writeFileSync(path.join(dir, 'ca.crt'), this.caPem);
  }

  /** Stops listening and drops every connection: clients get "connection refused". */
  async refuse(): Promise<void> {
    for (const t of this.held) clearTimeout(t);
    this.held.clear();
    for (const w of [...this.watchers]) this.endWatch(w);
    this.server.closeAllConnections();
    if (this.server.listening) await new Promise<void>((r) => this.server.close(() => r()));
  }

  /** Listens again on the same port. */
  reopen(): Promise<void> {
    return new Promise((r, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.port, '127.0.0.1', () => (this.server.off('error', reject), r()));
    });
  }

  private later(ms: number): Promise<void> {
    return new Promise((r) => {
      const t = setTimeout(() => (this.held.delete(t), r()), ms);
      this.held.add(t);
    });
  }

  get url(): string {
    return `${this.tls ? 'https' : 'http'}://127.0.0.1:${this.port}`;
  }

  async start(): Promise<this> {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => this.handle(req, res);
    this.server = this.tls ? https.createServer({ cert: this.tls.cert, key: this.tls.key }, handler) : http.createServer(handler);
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  async close(): Promise<void> {
    if (this.runDir) fs.rmSync(this.runDir, { recursive: true, force: true });
    await this.refuse();
  }

  get resourceVersion(): number {
    return this.rv;
  }

  pod(namespace: string, name: string): Obj | undefined {
    const p = this.pods.get(`${namespace}/${name}`);
    return p && clone(p);
  }

  podNames(): string[] {
    return [...this.pods.keys()].sort();
  }

  /** Adds or replaces a pod, as a kubelet status update would: ADDED or MODIFIED to watchers. */
  upsert(pod: Obj): Obj {
    const p = clone(pod);
    p.apiVersion ??= 'v1';
    p.kind ??= 'Pod';
    p.metadata.uid ??= `uid-${p.metadata.namespace}-${p.metadata.name}`;
    const type: EventType = this.pods.has(key(p)) ? 'MODIFIED' : 'ADDED';
    this.commit(type, p);
    return clone(p);
  }

  remove(namespace: string, name: string): void {
    const p = this.pods.get(`${namespace}/${name}`);
    if (p) this.commit('DELETED', p);
  }

  /** Adds or replaces a namespace (ADDED or MODIFIED to namespace watchers). */
  upsertNamespace(name: string, labels: Record<string, string> = {}): Obj {
    const o: Obj = {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name, namespace: '', uid: `uid-ns-${name}`, labels: { 'kubernetes.io/metadata.name': name, ...labels } },
    };
    this.commit(this.nsStore.has(name) ? 'MODIFIED' : 'ADDED', o);
    return clone(o);
  }

  removeNamespace(name: string): void {
    const o = this.nsStore.get(name);
    if (o) this.commit('DELETED', o);
  }

  /** Forget history: watches from an older version now get 410, as after etcd compaction. */
  compact(): void {
    this.oldestRv = this.rv;
    this.history.length = 0;
  }

  /**
   * A BOOKMARK with the current resourceVersion on every watch that asked for them, as the API
   * server sends periodically: the client may resume from there even if no event of its
   * selection happened since.
   */
  bookmark(): void {
    for (const w of this.watchers) this.sendBookmark(w);
  }

  /** Watches and bookmarks sent (for tests). */
  readonly sent = { bookmarks: 0, timeouts: 0 };

  /** Ends every open watch stream (as an API server restart or watch timeout does). */
  dropWatches(): void {
    for (const w of this.watchers) this.endWatch(w);
  }

  /** Sends an ERROR event with 410 on every open watch, then ends it. */
  expireWatches(): void {
    for (const w of [...this.watchers]) {
      w.res.write(
        `${JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', status: 'Failure', message: 'too old resource version', reason: 'Expired', code: 410 } })}\n`,
      );
      this.endWatch(w);
    }
  }

  get openWatches(): number {
    return this.watchers.size;
  }

  private commit(type: EventType, obj: Obj): void {
    this.rv++;
    const p = clone(obj);
    p.metadata.resourceVersion = String(this.rv);
    const store = isNamespace(p) ? this.nsStore : this.pods;
    const k = isNamespace(p) ? p.metadata.name : key(p);
    if (type === 'DELETED') store.delete(k);
    else store.set(k, p);
    this.history.push({ rv: this.rv, type, obj: clone(p) });
    for (const w of this.watchers) this.send(w, type, p);
  }

  private send(w: Watcher, type: EventType, p: Obj): void {
    if (isNamespace(p) !== (w.kind === 'Namespace')) return;
    if (!fieldMatches(w.field, p) || !labelMatches(w.label, p)) return;
    w.res.write(`${JSON.stringify({ type, object: p })}\n`);
  }

  private sendBookmark(w: Watcher): void {
    if (!w.bookmarks) return;
    this.sent.bookmarks++;
    w.res.write(
      `${JSON.stringify({ type: 'BOOKMARK', object: { kind: w.kind === 'Namespace' ? 'Namespace' : 'Pod', apiVersion: 'v1', metadata: { resourceVersion: String(this.rv) } } })}\n`,
    );
  }

  private endWatch(w: Watcher): void {
    clearTimeout(w.timer);
    this.watchers.delete(w);
    w.res.end();
  }

  private json(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    this.answer(res, status, typeof body === 'string' ? body : JSON.stringify(body), headers);
  }

  private answer(res: http.ServerResponse, status: number, text: string, headers: Record<string, string>): void {
    if (res.destroyed) return;
    if (!this.trickleMs) {
      res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(text);
      return;
    }
    const bytes = Buffer.from(text);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(bytes.length), ...headers });
    res.flushHeaders();
    let i = 0;
    const step = () => {
      if (res.destroyed) return;
      if (i >= bytes.length) return void res.end();
      res.write(bytes.subarray(i, ++i));
      void this.later(this.trickleMs ?? 1000).then(step);
    };
    step();
  }

  private status(res: http.ServerResponse, code: number, reason: string, message: string): void {
    this.json(res, code, { kind: 'Status', apiVersion: 'v1', status: 'Failure', message, reason, code });
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://x');
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown;
      try {
        body = text ? JSON.parse(text) : undefined;
      } catch {
        body = text;
      }
      const rec: Recorded = {
        method: req.method ?? '',
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        contentType: req.headers['content-type'],
        authorization: req.headers.authorization,
        body,
        authorized: this.token === undefined || req.headers.authorization === `Bearer ${this.token}`,
      };
      res.once('finish', () => (rec.status = res.statusCode));
      this.requests.push(rec);
      for (const w of this.waiters.filter((x) => this.requests.length >= x.n)) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve();
      }
      void this.serve(rec, res);
    });
  }

  private async serve(rec: Recorded, res: http.ServerResponse): Promise<void> {
    {
      if (this.gate) await this.gate;
      if (this.delayMs) await this.later(this.delayMs);
      if (this.failWith) return this.json(res, this.failWith.status, this.failWith.body(rec.authorization ?? ''), this.failWith.headers);
      if (this.token !== undefined && rec.authorization !== `Bearer ${this.token}`) {
        return this.status(res, 401, 'Unauthorized', 'Unauthorized');
      }
      const f = this.failures.find((x) => x.times > 0 && x.method === rec.method && x.path.test(rec.path));
      if (f) {
        f.times--;
        return this.status(res, f.status, 'InternalError', `injected failure ${f.status}`);
      }
      try {
        this.route(rec, res);
      } catch (e) {
        this.status(res, 400, 'BadRequest', (e as Error).message);
      }
    }
  }

  private route(r: Recorded, res: http.ServerResponse): void {
    if (r.method === 'GET' && r.path === '/api/v1/pods') {
      return r.query.watch === 'true' || r.query.watch === '1' ? this.watch(r, res) : this.list(r, res);
    }
    if (r.method === 'GET' && r.path === '/api/v1/namespaces') {
      return r.query.watch === 'true' || r.query.watch === '1' ? this.watch(r, res, 'Namespace') : this.list(r, res, 'Namespace');
    }
    const nsm = /^\/api\/v1\/namespaces\/([^/]+)$/.exec(r.path);
    if (nsm && r.method === 'GET') {
      const o = this.nsStore.get(decodeURIComponent(nsm[1]));
      return o ? this.json(res, 200, o) : this.status(res, 404, 'NotFound', `namespaces "${decodeURIComponent(nsm[1])}" not found`);
    }
    let m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)(\/status)?$/.exec(r.path);
    if (m) {
      const [ns, name, sub] = [decodeURIComponent(m[1]), decodeURIComponent(m[2]), m[3]];
      const p = this.pods.get(`${ns}/${name}`);
      if (!p) return this.status(res, 404, 'NotFound', `pods "${name}" not found`);
      if (r.method === 'GET' && !sub) return this.json(res, 200, p);
      if (r.method === 'PATCH' && sub) return this.patchStatus(r, res, p);
      if (r.method === 'DELETE' && !sub) return this.delete(r, res, p);
      return this.status(res, 405, 'MethodNotAllowed', `${r.method} ${r.path}`);
    }
    m = /^\/api\/v1\/namespaces\/([^/]+)\/events$/.exec(r.path);
    if (m && r.method === 'POST') {
      this.events.push(r.body as Obj);
      return this.json(res, 201, r.body);
    }
    const o = r.method === 'GET' ? this.objects.get(r.path) : undefined;
    if (o) return this.json(res, 200, o);
    this.status(res, 404, 'NotFound', `no route for ${r.method} ${r.path}`);
  }

  private selected(r: Recorded, kind?: 'Namespace'): Obj[] {
    return [...(kind ? this.nsStore : this.pods).values()]
      .filter((p) => fieldMatches(r.query.fieldSelector ?? '', p) && labelMatches(r.query.labelSelector ?? '', p))
      .sort((a, b) => key(a).localeCompare(key(b)));
  }

  private list(r: Recorded, res: http.ServerResponse, kind?: 'Namespace'): void {
    const all = this.selected(r, kind);
    const limit = Math.min(Number(r.query.limit || this.pageSize), this.pageSize);
    // A continue token names the list's resourceVersion and the offset; once that version is
    // compacted the API server answers 410 Expired and the client must list again from scratch.
    const [tokenRv, offset] = r.query.continue ? Buffer.from(r.query.continue, 'base64').toString().split(':').map(Number) : [this.rv, 0];
    if (tokenRv < this.oldestRv) {
      return this.status(
        res,
        410,
        'Expired',
        'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.',
      );
    }
    const start = offset;
    const items = all.slice(start, start + limit);
    const next = start + limit < all.length ? Buffer.from(`${tokenRv}:${start + limit}`).toString('base64') : undefined;
    this.listPages++;
    this.afterListPage?.(this.listPages);
    this.json(res, 200, {
      kind: kind ? 'NamespaceList' : 'PodList',
      apiVersion: 'v1',
      metadata: { resourceVersion: String(this.rv), ...(next ? { continue: next } : {}) },
      items,
    });
  }

  private watch(r: Recorded, res: http.ServerResponse, kind?: 'Namespace'): void {
    const from = Number(r.query.resourceVersion || this.rv);
    if (from < this.oldestRv) return this.status(res, 410, 'Expired', `too old resource version: ${from} (${this.oldestRv})`);
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const w: Watcher = { res, field: r.query.fieldSelector ?? '', label: r.query.labelSelector ?? '', kind, bookmarks: r.query.allowWatchBookmarks === 'true' };
    for (const h of this.history) if (h.rv > from) this.send(w, h.type, h.obj);
    this.watchers.add(w);
    const secs = Number(r.query.timeoutSeconds || 0);
    const ms = Math.min(secs > 0 ? secs * 1000 : this.maxWatchMs, this.maxWatchMs);
    w.timer = setTimeout(() => {
      // timeoutSeconds reached: the server ends the stream (a bookmark first, when asked for),
      // and the client is expected to watch again from the last version it saw.
      this.sent.timeouts++;
      this.sendBookmark(w);
      this.endWatch(w);
    }, ms);
    res.on('close', () => {
      clearTimeout(w.timer);
      this.watchers.delete(w);
    });
  }

  private patchStatus(r: Recorded, res: http.ServerResponse, p: Obj): void {
    if (r.contentType !== 'application/merge-patch+json') {
      return this.status(res, 415, 'UnsupportedMediaType', `content type ${r.contentType} not supported here`);
    }
    const patch = (r.body ?? {}) as { metadata?: { labels?: Record<string, string | null>; annotations?: Record<string, string | null> } };
    const next = clone(p);
    for (const [k, v] of Object.entries(patch.metadata?.labels ?? {})) {
      next.metadata.labels ??= {};
      if (v === null) delete next.metadata.labels[k];
      else next.metadata.labels[k] = v;
    }
    for (const [k, v] of Object.entries(patch.metadata?.annotations ?? {})) {
      next.metadata.annotations ??= {};
      if (v === null) delete next.metadata.annotations[k];
      else next.metadata.annotations[k] = v;
    }
    this.commit('MODIFIED', next);
    this.json(res, 200, this.pods.get(key(next)));
  }

  private delete(r: Recorded, res: http.ServerResponse, p: Obj): void {
    const pre = (r.body as { preconditions?: { uid?: string; resourceVersion?: string } } | undefined)?.preconditions ?? {};
    if (pre.uid !== undefined && pre.uid !== p.metadata.uid) {
      return this.status(res, 409, 'Conflict', `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${p.metadata.uid}`);
    }
    if (pre.resourceVersion !== undefined && pre.resourceVersion !== p.metadata.resourceVersion) {
      return this.status(
        res,
        409,
        'Conflict',
        `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${p.metadata.resourceVersion}`,
      );
    }
    this.commit('DELETED', p);
    this.json(res, 200, p);
  }
}

// ---- Pods as the repair controller sees them ----------------------------------------------

export const NODE = 'node-a';

interface PodArgs {
  name: string;
  namespace?: string;
  node?: string;
  labels?: Record<string, string>;
  /** Defaults to the sidecar status annotation; null = none. */
  annotations?: Record<string, string> | null;
  initStatus?: Record<string, unknown>;
  podIP?: string;
  uid?: string;
}

/** A sidecar pod (istio-validation init container, istio-proxy) with the given init status. */
export function repairPod(a: PodArgs): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: a.name,
      namespace: a.namespace ?? 'shop',
      ...(a.uid ? { uid: a.uid } : {}),
      labels: a.labels ?? {},
      ...(a.annotations === null ? {} : { annotations: a.annotations ?? { 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}' } }),
    },
    spec: {
      nodeName: a.node ?? NODE,
      initContainers: [{ name: 'istio-validation' }],
      containers: [{ name: 'app' }, { name: 'istio-proxy', args: ['proxy', 'sidecar'] }],
    },
    status: {
      phase: 'Pending',
      ...(a.podIP ? { podIP: a.podIP, podIPs: [{ ip: a.podIP }] } : {}),
      initContainerStatuses: a.initStatus ? [a.initStatus] : [],
    },
  };
}

/** istio-validation crash-looping: waiting now, last run exited 126. */
export const brokenWaiting = {
  name: 'istio-validation',
  state: { waiting: { reason: 'CrashLoopBackOff', message: 'back-off 20s restarting failed container' } },
  lastState: { terminated: { exitCode: 126, reason: 'Error', message: 'iptables validation failed; workload is not ready for Istio.' } },
};

/** istio-validation failed again just now, and had failed before. */
export const brokenTerminated = {
  name: 'istio-validation',
  state: { terminated: { exitCode: 126, reason: 'Error', message: 'validation failed' } },
  lastState: { terminated: { exitCode: 126, reason: 'Error', message: 'validation failed' } },
};

/** istio-validation passed. */
export const healthy = {
  name: 'istio-validation',
  state: { terminated: { exitCode: 0, reason: 'Completed' } },
};

/** istio-validation failed once, then passed: never touched. */
export const recovered = {
  name: 'istio-validation',
  state: { terminated: { exitCode: 0, reason: 'Completed' } },
  lastState: { terminated: { exitCode: 126, reason: 'Error', message: 'validation failed' } },
};

/**
 * The stand-in as the plugin meets it: HTTPS with a CA made for the run, the bearer token
 * checked, and a run dir holding the istio-cni-kubeconfig install-cni would write for it.
 */
export async function startApiStandIn(token = 'sa-token-never-logged-9c1e77'): Promise<ApiStandIn> {
  const api = await new KubeApiStandIn(makePki()).start();
  api.token = token;
  api.runDir = tempDir(path.join(os.tmpdir(), 'icts-run-'));
  fs.writeFileSync(path.join(api.runDir, 'istio-cni-kubeconfig'), istioKubeconfig(api.url, { caPem: api.caPem, token }), { mode: 0o600 });
  return api as ApiStandIn;
}

/** The stand-in with its token set (startApiStandIn). */
export type ApiStandIn = KubeApiStandIn & { token: string };
