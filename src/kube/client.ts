// Pod lookup for the CNI plugin: one GET per attempt over the one transport (rest.ts: no
// Kubernetes client library on the plugin's hot path), and the retry loop upstream uses
// (30 attempts, 1 s apart by default).
import { KubeError, statusError } from './errors';
import { KubeEndpoint } from './kubeconfig';
import { Namespace, Pod } from './pod';

export type { Namespace } from './pod';
import { RestClient, restClientFor } from './rest';

export { KubeError, retryAfterMs } from './errors';

export interface KubeClient {
  /**
   * Rejects with KubeError. `uid`: the pod's UID as the runtime gave it (K8S_POD_UID), when
   * known; a client with a cache answers from it only for a pod with that UID.
   */
  getPod(namespace: string, name: string, uid?: string): Promise<Pod>;
  /** Rejects with KubeError. Optional: only the ambient branch needs it. */
  getNamespace?(name: string): Promise<Namespace>;
}

export interface HttpsKubeClientOptions {
  /**
   * Deadline of one request, from the moment it gets a connection to the last byte of the body;
   * default 5000 ms (see rest.ts).
   */
  readonly timeoutMs?: number;
  /** Largest response body accepted; default 8 MiB. */
  readonly maxBodyBytes?: number;
}

export function podPath(namespace: string, name: string): string {
  return `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`;
}

/** A path segment the API would not read as a name. */
const badName = (s: string) => !s || s === '.' || s === '..';

/** The plugin's KubeClient: GETs over the transport, every non-200 a KubeError. */
export class HttpsKubeClient implements KubeClient {
  private readonly rest: RestClient;

  constructor(ep: KubeEndpoint, opts: HttpsKubeClientOptions = {}) {
    this.rest = restClientFor(ep, { timeoutMs: opts.timeoutMs ?? 5000, maxBodyBytes: opts.maxBodyBytes ?? 8 << 20 });
  }

  /** Closes kept-alive sockets so a short-lived process can exit at once. */
  close(): void {
    this.rest.close();
  }

  getPod(namespace: string, name: string): Promise<Pod> {
    if (badName(namespace) || badName(name)) {
      return Promise.reject(new KubeError(`invalid pod reference ${JSON.stringify(`${namespace}/${name}`)}`, 400));
    }
    return this.getJson(podPath(namespace, name)) as Promise<Pod>;
  }

  getNamespace(name: string): Promise<Namespace> {
    if (badName(name)) return Promise.reject(new KubeError(`invalid namespace ${JSON.stringify(name)}`, 400));
    return this.getJson(`/api/v1/namespaces/${encodeURIComponent(name)}`) as Promise<Namespace>;
  }

  private async getJson(path: string): Promise<unknown> {
    const r = await this.rest.request('GET', path);
    if (r.status !== 200) throw statusError(`GET ${path}`, r);
    if (typeof r.body !== 'object' || r.body === null) {
      throw new KubeError(`GET ${path}: response is not JSON`, r.status);
    }
    return r.body;
  }
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
