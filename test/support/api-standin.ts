// A local Kubernetes API stand-in for running the plugin binary: HTTPS with a generated CA on
// 127.0.0.1, the bearer token checked, GET /api/v1/namespaces/<ns>/pods/<name> answered from a
// map, every request recorded; and a run dir with the kubeconfig install-cni would write.
// Fault modes for the fault-injection tests: answers held back (a slow API, or until the test
// lets them go), a body trickled byte by byte, a status for every request (500, 429, ...), and
// the listener closed (connection refused) and reopened on the same port.
import * as fs from 'node:fs';
import * as https from 'node:https';
import { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { podPath } from '../../src/kube/client';
import { Pod } from '../../src/kube/pod';
import { istioKubeconfig, makePki } from './tls';
import { tempDir } from './tmp';

export interface ApiStandIn {
  readonly url: string;
  readonly token: string;
  /** A temp dir holding istio-cni-kubeconfig (the plugin's cni_agent_run_dir). */
  readonly runDir: string;
  readonly requests: string[];
  pods: Map<string, Pod>;
  /** Answer every request with this status and body instead (e.g. 503, or 403 echoing the token). */
  failWith?: { status: number; body: (authorization: string) => string; headers?: Record<string, string> };
  /** Hold every answer this long before sending it (a slow API server). */
  delayMs?: number;
  /** Hold every answer until this settles (the test decides when the API answers). */
  gate?: Promise<void>;
  /** Send the headers at once, then the body one byte every `trickleMs` (a stalled, not silent, server). */
  trickleMs?: number;
  readonly port: number;
  /** The CA that signed the server's certificate (PEM). */
  readonly caPem: string;
  /** Requests received (also those still held); resolves once there are at least `n`. */
  waitForRequests(n: number): Promise<void>;
  /** Stops listening and drops every connection: clients get "connection refused". */
  refuse(): Promise<void>;
  /** Listens again on the same port. */
  reopen(): Promise<void>;
  addPod(pod: Pod): void;
  close(): Promise<void>;
}

export async function startApiStandIn(token = 'sa-token-never-logged-9c1e77'): Promise<ApiStandIn> {
  const pki = makePki();
  const requests: string[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  const s: Partial<ApiStandIn> & { pods: Map<string, Pod> } = { pods: new Map(), requests, token };
  const pending = new Set<NodeJS.Timeout>();
  const later = (ms: number) => new Promise<void>((r) => {
    const t = setTimeout(() => (pending.delete(t), r()), ms);
    pending.add(t);
  });
  const answer = (res: import('node:http').ServerResponse, status: number, body: string, headers: Record<string, string> = {}) => {
    if (res.destroyed) return;
    if (!s.trickleMs) {
      res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(body);
      return;
    }
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), ...headers });
    res.flushHeaders();
    const bytes = Buffer.from(body);
    let i = 0;
    const step = () => {
      if (res.destroyed) return;
      if (i >= bytes.length) return void res.end();
      res.write(bytes.subarray(i, ++i));
      void later(s.trickleMs ?? 1000).then(step);
    };
    step();
  };
  const server = https.createServer({ cert: pki.cert, key: pki.key }, async (req, res) => {
    requests.push(`${req.method} ${req.url}`);
    for (const w of waiters.filter((x) => requests.length >= x.n)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
    const auth = req.headers.authorization ?? '';
    if (s.gate) await s.gate;
    if (s.delayMs) await later(s.delayMs);
    if (s.failWith) {
      answer(res, s.failWith.status, s.failWith.body(auth), s.failWith.headers);
      return;
    }
    if (auth !== `Bearer ${token}`) {
      answer(res, 401, '{"kind":"Status","message":"Unauthorized"}');
      return;
    }
    const pod = s.pods.get(req.url ?? '');
    if (req.method === 'GET' && pod) answer(res, 200, JSON.stringify(pod));
    else answer(res, 404, '{"kind":"Status","message":"pods not found"}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const url = `https://127.0.0.1:${port}`;
  const runDir = tempDir(path.join(os.tmpdir(), 'icts-run-'));
  fs.writeFileSync(path.join(runDir, 'istio-cni-kubeconfig'), istioKubeconfig(url, { caPem: pki.ca, token }), { mode: 0o600 });
  const stopListening = async () => {
    for (const t of pending) clearTimeout(t);
    pending.clear();
    server.closeAllConnections();
    if (server.listening) await new Promise<void>((r) => server.close(() => r()));
  };
  return Object.assign(s, {
    url,
    port,
    runDir,
    caPem: pki.ca,
    addPod(pod: Pod) {
      s.pods.set(podPath(pod.metadata?.namespace ?? '', pod.metadata?.name ?? ''), pod);
    },
    waitForRequests: (n: number) =>
      requests.length >= n ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ n, resolve })),
    refuse: stopListening,
    reopen: () => new Promise<void>((r, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => (server.off('error', reject), r()));
    }),
    close: async () => {
      fs.rmSync(runDir, { recursive: true, force: true });
      await stopListening();
    },
  }) as ApiStandIn;
}
