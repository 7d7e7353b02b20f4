// Pod lookup for the CNI plugin: one HTTPS GET per attempt with node's https module (no
// Kubernetes client library on the plugin's hot path), and the retry loop upstream uses
// (30 attempts, 1 s apart by default).
import * as http from 'node:http';
import * as https from 'node:https';
import { KubeEndpoint } from './kubeconfig';
import { Pod } from './pod';

export interface KubeClient {
  /**
   * Rejects with KubeError. `uid`: the pod's UID as the runtime gave it (K8S_POD_UID), when
   * known; a client with a cache answers from it only for a pod with that UID.
   */
  getPod(namespace: string, name: string, uid?: string): Promise<Pod>;
  /** Rejects with KubeError. Optional: only the ambient branch needs it. */
  getNamespace?(name: string): Promise<Namespace>;
}

/** The parts of a core/v1 Namespace the ambient branch reads. */
export interface Namespace {
  metadata?: { name?: string; labels?: Record<string, string> | null };
}

export class KubeError extends Error {
  constructor(
    message: string,
    /** HTTP status when the API server answered. */
    readonly status?: number,
    /** The server's Retry-After (429, 503), in ms, when it sent one in seconds. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
    this.name = 'KubeError';
  }

  /** No answer, a 5xx or 429: the API server may well answer later. */
  get transient(): boolean {
    return this.status === undefined || this.status >= 500 || this.status === 429;
  }
}

export interface HttpsKubeClientOptions {
  /**
   * Deadline of one request, from the moment it gets a connection (connecting and the TLS
   * handshake included) to the last byte of the body; default 5000 ms. Not an idle timeout: a
   * server that trickles its answer still ends it. Time spent waiting for one of the agent's
   * (up to 8) kept-alive connections does not count: each request ahead has its own deadline.
   */
  readonly timeoutMs?: number;
  /** Largest response body accepted; default 8 MiB. */
  readonly maxBodyBytes?: number;
}

export function podPath(namespace: string, name: string): string {
  return `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`;
}

export class HttpsKubeClient implements KubeClient {
  private readonly agent: http.Agent;

  constructor(
    private readonly ep: KubeEndpoint,
    private readonly opts: HttpsKubeClientOptions = {},
  ) {
    const tls = ep.server.startsWith('https:');
    this.agent = tls
      ? new https.Agent({
          keepAlive: true,
          maxSockets: 8,
          ...(ep.ca !== undefined ? { ca: ep.ca } : {}),
          rejectUnauthorized: !ep.insecureSkipTlsVerify,
          ...(ep.tlsServerName ? { servername: ep.tlsServerName } : {}),
          ...(ep.clientCert && ep.clientKey ? { cert: ep.clientCert, key: ep.clientKey } : {}),
        })
      : new http.Agent({ keepAlive: true, maxSockets: 8 });
  }

  private scrub(text: string): string {
    const t = this.ep.token;
    return t && text.includes(t) ? text.split(t).join('[redacted]') : text;
  }

  /** Closes kept-alive sockets so a short-lived process can exit at once. */
  close(): void {
    this.agent.destroy();
  }

  getPod(namespace: string, name: string): Promise<Pod> {
    if (!namespace || !name || namespace === '.' || namespace === '..' || name === '.' || name === '..') {
      return Promise.reject(new KubeError(`invalid pod reference ${JSON.stringify(`${namespace}/${name}`)}`, 400));
    }
    return this.getJson(podPath(namespace, name)) as Promise<Pod>;
  }

  getNamespace(name: string): Promise<Namespace> {
    if (!name || name === '.' || name === '..') return Promise.reject(new KubeError(`invalid namespace ${JSON.stringify(name)}`, 400));
    return this.getJson(`/api/v1/namespaces/${encodeURIComponent(name)}`) as Promise<Namespace>;
  }

  private getJson(path: string): Promise<unknown> {
    const url = new URL(this.ep.server + path);
    const timeoutMs = this.opts.timeoutMs ?? 5000;
    const maxBody = this.opts.maxBodyBytes ?? 8 << 20;
    const mod = url.protocol === 'https:' ? https : http;
    return new Promise((ok, fail) => {
      let answered = false;
      let deadline: NodeJS.Timeout | undefined;
      let settled = false;
      const resolve = (v: unknown) => ((settled = true), clearTimeout(deadline), ok(v));
      const reject = (e: KubeError) => ((settled = true), clearTimeout(deadline), fail(e));
      const req = mod.request(
        url,
        {
          method: 'GET',
          agent: this.agent,
          headers: {
            Accept: 'application/json',
            'User-Agent': 'istio-cni-ts',
            ...(this.ep.token ? { Authorization: `Bearer ${this.ep.token}` } : {}),
          },
        },
        (res) => {
          answered = true;
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > maxBody) {
              req.destroy(new KubeError(`GET ${path}: response larger than ${maxBody} bytes`, res.statusCode));
              return;
            }
            chunks.push(c);
          });
          res.on('error', (e) => reject(new KubeError(`GET ${path}: ${e.message}`)));
          res.on('end', () => {
            const body = Buffer.concat(chunks).toString('utf8');
            const status = res.statusCode ?? 0;
            if (status !== 200) {
              // The API's message is echoed from the server: make sure it cannot carry our token.
              reject(new KubeError(`GET ${path}: HTTP ${status}${this.scrub(statusReason(body))}`, status, retryAfterMs(res.headers['retry-after'])));
              return;
            }
            try {
              resolve(JSON.parse(body));
            } catch (e) {
              reject(new KubeError(`GET ${path}: response is not JSON: ${(e as Error).message}`, status));
            }
          });
        },
      );
      req.once('socket', () => {
        if (settled) return;
        deadline = setTimeout(() => {
          const e = new KubeError(`GET ${path}: ${answered ? 'answer not complete' : 'no answer'} within ${timeoutMs} ms`);
          fail(e); // first: the socket's own errors ("aborted", ECONNRESET) follow the destroy
          req.destroy(e);
        }, timeoutMs);
      });
      req.on('error', (e) => reject(e instanceof KubeError ? e : new KubeError(`GET ${path}: ${e.message}`)));
      req.end();
    });
  }
}

/** Retry-After in delta-seconds (what the API server sends) as ms; undefined otherwise. */
export function retryAfterMs(header: string | string[] | undefined): number | undefined {
  const v = Array.isArray(header) ? header[0] : header;
  return v !== undefined && /^\s*[0-9]{1,6}\s*$/.test(v) ? Number(v) * 1000 : undefined;
}

/** The API's Status message, if the body is one, kept short. */
function statusReason(body: string): string {
  try {
    const s = JSON.parse(body) as { message?: unknown };
    if (typeof s.message === 'string' && s.message !== '') return ` (${s.message.slice(0, 300)})`;
  } catch {
    // not a Status object
  }
  return '';
}

export interface RetryOptions {
  /** Attempts in all (upstream: 30). */
  readonly attempts: number;
  /** Pause between attempts (upstream: 1000 ms). */
  readonly intervalMs: number;
  readonly sleep: (ms: number) => Promise<void>;
  /** Told about each failed attempt (1-based). */
  readonly onAttemptFailed?: (attempt: number, err: KubeError) => void;
  /** The pod's UID from CNI_ARGS ('' or absent when not given), handed to getPod. */
  readonly podUid?: string;
}

export const DEFAULT_POD_LOOKUP = { attempts: 30, intervalMs: 1000 } as const;

/** The longest pause a server's Retry-After can ask for between two attempts. */
export const MAX_RETRY_AFTER_MS = 10_000;

/**
 * GET the pod, retrying every failure as upstream does; rejects with the last error. A server
 * that answers 429/503 with Retry-After gets at least that pause (as client-go honours it), at
 * most MAX_RETRY_AFTER_MS, so a throttled API is not hammered and a hostile header cannot stall ADD.
 */
export async function getPodWithRetries(client: KubeClient, namespace: string, name: string, opts: RetryOptions): Promise<Pod> {
  let last: KubeError | undefined;
  for (let attempt = 1; attempt <= opts.attempts; attempt++) {
    try {
      return await client.getPod(namespace, name, opts.podUid);
    } catch (e) {
      last = e instanceof KubeError ? e : new KubeError(e instanceof Error ? e.message : String(e));
      opts.onAttemptFailed?.(attempt, last);
    }
    if (attempt < opts.attempts) await opts.sleep(Math.max(opts.intervalMs, Math.min(last?.retryAfterMs ?? 0, MAX_RETRY_AFTER_MS)));
  }
  throw last ?? new KubeError('no attempt made');
}
