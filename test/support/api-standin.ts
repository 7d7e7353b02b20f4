// A local Kubernetes API stand-in for running the plugin binary: HTTPS with a generated CA on
// 127.0.0.1, the bearer token checked, GET /api/v1/namespaces/<ns>/pods/<name> answered from a
// map, every request recorded; and a run dir with the kubeconfig install-cni would write.
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
  failWith?: { status: number; body: (authorization: string) => string };
  addPod(pod: Pod): void;
  close(): Promise<void>;
}

export async function startApiStandIn(token = 'sa-token-never-logged-9c1e77'): Promise<ApiStandIn> {
  const pki = makePki();
  const requests: string[] = [];
  const s: Partial<ApiStandIn> & { pods: Map<string, Pod> } = { pods: new Map(), requests, token };
  const server = https.createServer({ cert: pki.cert, key: pki.key }, (req, res) => {
    requests.push(`${req.method} ${req.url}`);
    const auth = req.headers.authorization ?? '';
    if (s.failWith) {
      res.writeHead(s.failWith.status, { 'content-type': 'application/json' }).end(s.failWith.body(auth));
      return;
    }
    if (auth !== `Bearer ${token}`) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"kind":"Status","message":"Unauthorized"}');
      return;
    }
    const pod = s.pods.get(req.url ?? '');
    if (req.method === 'GET' && pod) res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(pod));
    else res.writeHead(404, { 'content-type': 'application/json' }).end('{"kind":"Status","message":"pods not found"}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const runDir = tempDir(path.join(os.tmpdir(), 'icts-run-'));
  fs.writeFileSync(path.join(runDir, 'istio-cni-kubeconfig'), istioKubeconfig(url, { caPem: pki.ca, token }), { mode: 0o600 });
  return Object.assign(s, {
    url,
    runDir,
    addPod(pod: Pod) {
      s.pods.set(podPath(pod.metadata?.namespace ?? '', pod.metadata?.name ?? ''), pod);
    },
    close: async () => {
      fs.rmSync(runDir, { recursive: true, force: true });
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  }) as ApiStandIn;
}
