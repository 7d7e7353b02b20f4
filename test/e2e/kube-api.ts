// A local stand-in for the Kubernetes API server, enough for the CNI plugin: GET of a pod over
// real TLS (a CA made for the run), bearer token checked, every request recorded. Also the
// service account files install-cni builds the plugin's kubeconfig from, and a list + watch of
// the pods bound to a node (`?fieldSelector=spec.nodeName=N`), for the agent's pod cache: the
// list answers in one page, the watch streams an ADDED event for every pod added later.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { Pod } from '../../src/kube/pod';
import { makePki } from '../support/tls';

export interface ApiRequest {
  method: string;
  path: string;
  authorized: boolean;
  status: number;
}

export class KubeApiStandIn {
  readonly requests: ApiRequest[] = [];
  private readonly pods = new Map<string, Pod>();
  private readonly watchers = new Set<{ node: string; res: http.ServerResponse }>();
  private rv = 1;
  private server?: https.Server;
  port = 0;
  caPem = '';

  constructor(readonly token: string) {}

  async start(): Promise<void> {
    const pki = makePki();
    this.caPem = pki.ca;
    this.server = https.createServer({ cert: pki.cert, key: pki.key }, (req, res) => {
      const authorized = req.headers.authorization === `Bearer ${this.token}`;
      const m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/?]+)$/.exec(req.url ?? '');
      const pod = m ? this.pods.get(`${decodeURIComponent(m[1])}/${decodeURIComponent(m[2])}`) : undefined;
      const reply = (status: number, body: object) => {
        this.requests.push({ method: req.method ?? '', path: req.url ?? '', authorized, status });
        res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      };
      const url = new URL(req.url ?? '/', 'https://x');
      if (authorized && req.method === 'GET' && url.pathname === '/api/v1/pods') return this.listOrWatch(url, res, (status) =>
        this.requests.push({ method: 'GET', path: req.url ?? '', authorized, status }));
      if (!authorized) reply(401, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'Unauthorized', code: 401 });
      else if (req.method !== 'GET' || !m) reply(405, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'MethodNotAllowed', code: 405 });
      else if (!pod) reply(404, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'NotFound', code: 404 });
      else reply(200, pod);
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  /** Adds the pod, bound to `nodeName` when given (as the scheduler binds it), and tells the watches of that node. */
  addPod(pod: Pod, nodeName?: string): void {
    const p = { ...pod, metadata: { ...pod.metadata, resourceVersion: String(++this.rv) }, spec: { ...pod.spec, ...(nodeName ? { nodeName } : {}) } } as Pod;
    this.pods.set(`${pod.metadata?.namespace}/${pod.metadata?.name}`, p);
    for (const w of this.watchers) if (nodeName === w.node) w.res.write(`${JSON.stringify({ type: 'ADDED', object: p })}\n`);
  }

  /** Open pod watches (for tests that wait until the agent watches). */
  get openWatches(): number {
    return this.watchers.size;
  }

  private listOrWatch(url: URL, res: http.ServerResponse, record: (status: number) => void): void {
    const sel = /^spec\.nodeName=(.+)$/.exec(url.searchParams.get('fieldSelector') ?? '');
    if (!sel) {
      record(400);
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'Status', status: 'Failure', message: 'only spec.nodeName=N is served', code: 400 }));
      return;
    }
    const node = sel[1];
    record(200);
    if (url.searchParams.get('watch') !== 'true') {
      const items = [...this.pods.values()].filter((p) => (p.spec as { nodeName?: string } | undefined)?.nodeName === node);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: String(this.rv) }, items }));
      return;
    }
    // Pods are only ever added (or replaced) here: a watch from version R first gets the node's
    // pods changed after R (added between the client's list and its watch), then every addPod.
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    const from = Number(url.searchParams.get('resourceVersion') ?? 0);
    for (const p of this.pods.values()) {
      if ((p.spec as { nodeName?: string } | undefined)?.nodeName === node && Number((p.metadata as { resourceVersion?: string } | undefined)?.resourceVersion) > from) res.write(`${JSON.stringify({ type: 'ADDED', object: p })}\n`);
    }
    const w = { node, res };
    this.watchers.add(w);
    const timeout = setTimeout(() => res.end(), Number(url.searchParams.get('timeoutSeconds') ?? 60) * 1000);
    res.on('close', () => {
      clearTimeout(timeout);
      this.watchers.delete(w);
    });
  }

  /** Requests for one pod's path. */
  requestsFor(namespace: string, name: string): ApiRequest[] {
    return this.requests.filter((r) => r.path === `/api/v1/namespaces/${namespace}/pods/${name}`);
  }

  /**
   * The files a pod's service account mount holds (token, ca.crt), which install-cni reads to
   * write <cni_agent_run_dir>/istio-cni-kubeconfig.
   */
  writeServiceAccount(dir: string): void {
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'token'), this.token, { mode: 0o600 });
    fs.writeFileSync(path.join(dir, 'ca.crt'), this.caPem);
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    for (const w of this.watchers) w.res.end();
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}
