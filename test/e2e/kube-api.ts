// A local stand-in for the Kubernetes API server, enough for the CNI plugin: GET of a pod over
// real TLS (a CA made for the run), bearer token checked, every request recorded. Also the
// service account files install-cni builds the plugin's kubeconfig from.
import * as fs from 'node:fs';
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
      if (!authorized) reply(401, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'Unauthorized', code: 401 });
      else if (req.method !== 'GET' || !m) reply(405, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'MethodNotAllowed', code: 405 });
      else if (!pod) reply(404, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'NotFound', code: 404 });
      else reply(200, pod);
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  addPod(pod: Pod): void {
    this.pods.set(`${pod.metadata?.namespace}/${pod.metadata?.name}`, pod);
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
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}
