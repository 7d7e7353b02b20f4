// The one Kubernetes HTTP transport, over node's http/https (no client library: see the README,
// "Dependencies"): JSON requests (GET, PATCH, DELETE, POST) and watch streams, for the plugin's
// pod GET (client.ts) and for everything the agent does. What every call gets here, once:
// - a keep-alive pool of at most 8 connections per client;
// - a deadline per request from the moment it has a connection (connect and TLS handshake
//   included) to the last byte of the body: a server that trickles its answer still ends it;
//   waiting for one of the 8 connections does not count (each request ahead has its own);
// - a cap on the body size;
// - error bodies with our bearer token scrubbed (a proxy or webhook may echo it);
// - the server's Retry-After, for the caller's pause.
// Credentials may be functions, called per request: the agent's service-account token rotates,
// and reading two small files costs nothing next to a TLS handshake. The connection pool is
// rebuilt only when the CA bundle changes.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import { KubeError, retryAfterMs, statusError } from './errors';
import { InClusterSettings, KubeEndpoint, inClusterFiles, inClusterServer } from './kubeconfig';

export { KubeError, statusError, statusMessage } from './errors';

export interface RestConfig {
  /** Base URL, `https://host:port` (or http for local tests). */
  readonly server: string;
  /** PEM CA bundle to trust; undefined = the system's. A function is called per request. */
  readonly ca?: string | (() => string | undefined);
  readonly insecureSkipTlsVerify?: boolean;
  readonly tlsServerName?: string;
  /** Bearer token; a function is called per request. */
  readonly token?: string | (() => string | undefined);
  /** PEM client certificate and key (a kubeconfig's client-certificate-data / client-key-data). */
  readonly clientCert?: string;
  readonly clientKey?: string;
  /** Deadline of one non-watch request (see above); default 10 s. */
  readonly timeoutMs?: number;
  /** Largest response body accepted for non-watch calls; default 64 MiB (a large pod list page). */
  readonly maxBodyBytes?: number;
  readonly userAgent?: string;
}

/** The client's pool: at most this many connections to the API server at once. */
export const MAX_CONNECTIONS = 8;

export interface RestResponse {
  status: number;
  /** Parsed JSON when the body is JSON, else the text (token scrubbed unless 2xx). */
  body: unknown;
  /** The server's Retry-After in ms, when it sent one in seconds. */
  retryAfterMs?: number;
}

export type Query = Record<string, string | number | boolean | undefined>;

export interface RequestOptions {
  query?: Query;
  /** Sent as JSON. */
  body?: unknown;
  /** Content type for the body; default application/json. */
  contentType?: string;
  signal?: AbortSignal;
}

export interface WatchEvent {
  type: string;
  object: unknown;
}

export interface WatchOptions {
  query?: Query;
  signal?: AbortSignal;
  /** The stream is dropped after this long without a byte; default 5 min 30 s. */
  idleTimeoutMs?: number;
  onEvent(ev: WatchEvent): void;
}

export function buildPath(p: string, query?: Query): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `${p}?${s}` : p;
}

const value = (v: string | (() => string | undefined) | undefined): string | undefined => (typeof v === 'function' ? v() : v);

export class RestClient {
  private pool?: { ca: string | undefined; agent: http.Agent };
  private readonly tls: boolean;

  constructor(readonly cfg: RestConfig) {
    this.tls = cfg.server.startsWith('https:');
  }

  private agent(): http.Agent {
    const ca = this.tls ? value(this.cfg.ca) : undefined;
    if (this.pool && this.pool.ca === ca) return this.pool.agent;
    this.pool?.agent.destroy();
    const c = this.cfg;
    const agent = this.tls
      ? new https.Agent({
          keepAlive: true,
          maxSockets: MAX_CONNECTIONS,
          ...(ca !== undefined ? { ca } : {}),
          rejectUnauthorized: !c.insecureSkipTlsVerify,
          ...(c.tlsServerName ? { servername: c.tlsServerName } : {}),
          ...(c.clientCert && c.clientKey ? { cert: c.clientCert, key: c.clientKey } : {}),
        })
      : new http.Agent({ keepAlive: true, maxSockets: MAX_CONNECTIONS });
    this.pool = { ca, agent };
    return agent;
  }

  private headers(extra: Record<string, string>): Record<string, string> {
    const token = value(this.cfg.token);
    return {
      Accept: 'application/json',
      'User-Agent': this.cfg.userAgent ?? 'istio-cni-ts',
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...extra,
    };
  }

  /** Closes kept-alive sockets so a short-lived process can exit at once. */
  close(): void {
    this.pool?.agent.destroy();
    this.pool = undefined;
  }

  /**
   * One JSON call. Resolves with any HTTP status; rejects (KubeError without a status) only when
   * there is no complete answer: no connection, the deadline, a body over the cap.
   */
  request(method: string, apiPath: string, opts: RequestOptions = {}): Promise<RestResponse> {
    const target = buildPath(apiPath, opts.query);
    const what = `${method} ${target}`;
    const timeoutMs = this.cfg.timeoutMs ?? 10_000;
    const maxBody = this.cfg.maxBodyBytes ?? 64 << 20;
    return new Promise((ok, fail) => {
      let deadline: NodeJS.Timeout | undefined;
      let settled = false;
      const resolve = (v: RestResponse) => ((settled = true), clearTimeout(deadline), ok(v));
      const reject = (e: KubeError) => ((settled = true), clearTimeout(deadline), fail(e));
      let headers: Record<string, string>;
      let agent: http.Agent;
      try {
        agent = this.agent();
        headers = this.headers(opts.body !== undefined ? { 'Content-Type': opts.contentType ?? 'application/json' } : {});
      } catch (e) {
        reject(new KubeError(`${what}: ${(e as Error).message}`));
        return;
      }
      const payload = opts.body !== undefined ? Buffer.from(JSON.stringify(opts.body)) : undefined;
      if (payload) headers['Content-Length'] = String(payload.length);
      let answered = false;
      const mod = this.tls ? https : http;
      const req = mod.request(new URL(target, this.cfg.server), { method, agent, headers, signal: opts.signal }, (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > maxBody) {
            req.destroy(new KubeError(`${what}: response larger than ${maxBody} bytes`, res.statusCode));
            return;
          }
          chunks.push(c);
        });
        res.on('error', (e) => reject(e instanceof KubeError ? e : new KubeError(`${what}: ${e.message}`)));
        res.on('end', () => {
          const raw = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          const text = status >= 200 && status < 300 ? raw : withoutToken(raw, headers.Authorization);
          let body: unknown = text;
          try {
            body = text === '' ? undefined : JSON.parse(text);
          } catch {
            // not JSON: keep the text
          }
          const after = retryAfterMs(res.headers['retry-after']);
          resolve({ status, body, ...(after !== undefined ? { retryAfterMs: after } : {}) });
        });
      });
      req.once('socket', () => {
        if (settled) return;
        deadline = setTimeout(() => {
          const e = new KubeError(`${what}: ${answered ? 'answer not complete' : 'no answer'} within ${timeoutMs} ms`);
          reject(e); // first: the socket's own errors ("aborted", ECONNRESET) follow the destroy
          req.destroy(e);
        }, timeoutMs);
      });
      req.on('error', (e) => {
        if (!settled) reject(e instanceof KubeError ? e : new KubeError(`${what}: ${e.message}`));
      });
      req.end(payload);
    });
  }

  /**
   * A watch: GET with watch=true, then one JSON event per line until the server ends the stream
   * (resolves), the signal aborts (resolves), or something fails (rejects with KubeError; a
   * non-200 answer carries its status, 410 meaning the resource version is too old).
   */
  watch(apiPath: string, opts: WatchOptions): Promise<void> {
    const target = buildPath(apiPath, { ...opts.query, watch: 'true' });
    const what = `WATCH ${target}`;
    const idleMs = opts.idleTimeoutMs ?? 330_000;
    return new Promise((resolve, reject) => {
      if (opts.signal?.aborted) return resolve();
      let settled = false;
      const done = (err?: Error) => {
        if (settled) return;
        settled = true;
        opts.signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve();
      };
      let agent: http.Agent;
      let headers: Record<string, string>;
      try {
        agent = this.agent();
        headers = this.headers({});
      } catch (e) {
        return done(new KubeError(`${what}: ${(e as Error).message}`));
      }
      const mod = this.tls ? https : http;
      const req = mod.request(new URL(target, this.cfg.server), { method: 'GET', agent, headers, timeout: idleMs });
      const onAbort = () => {
        req.destroy();
        done();
      };
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      req.on('timeout', () => {
        req.destroy();
        done(new KubeError(`${what}: nothing received for ${idleMs} ms`));
      });
      req.on('error', (e) => done(e instanceof KubeError ? e : new KubeError(`${what}: ${e.message}`)));
      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        if (status !== 200) {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.length < 64 && chunks.push(c));
          res.on('end', () => {
            let body: unknown;
            try {
              body = JSON.parse(withoutToken(Buffer.concat(chunks).toString('utf8'), headers.Authorization));
            } catch {
              body = undefined;
            }
            done(statusError(what, { status, body, retryAfterMs: retryAfterMs(res.headers['retry-after']) }));
          });
          res.on('error', () => done(new KubeError(`${what}: HTTP ${status}`, status)));
          return;
        }
        let buf = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buf += chunk;
          let nl: number;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (line === '') continue;
            let ev: WatchEvent;
            try {
              ev = JSON.parse(line) as WatchEvent;
            } catch (e) {
              req.destroy();
              return done(new KubeError(`${what}: undecodable event: ${(e as Error).message}`));
            }
            try {
              opts.onEvent(ev);
            } catch (e) {
              req.destroy();
              return done(e as Error);
            }
          }
        });
        res.on('end', () => done());
        res.on('error', (e) => done(new KubeError(`${what}: ${e.message}`)));
        res.on('close', () => done());
      });
      req.end();
    });
  }
}

/** A transport for the endpoint a kubeconfig names (the plugin's path). */
export function restClientFor(ep: KubeEndpoint, extra: Pick<RestConfig, 'timeoutMs' | 'maxBodyBytes' | 'userAgent'> = {}): RestClient {
  return new RestClient({ ...ep, ...extra });
}

/**
 * In-cluster access with the agent's service account: KUBERNETES_SERVICE_{PROTOCOL,HOST,PORT},
 * the token and CA under SERVICE_ACCOUNT_DIR (CA: KUBE_CA_FILE when set), SKIP_TLS_VERIFY.
 * Throws when KUBERNETES_SERVICE_HOST or _PORT is not set.
 */
export function inClusterRest(s: InClusterSettings, extra: Pick<RestConfig, 'timeoutMs' | 'userAgent'> = {}): RestClient {
  const server = inClusterServer(s);
  const { caFile, tokenFile } = inClusterFiles(s);
  return new RestClient({
    server,
    insecureSkipTlsVerify: s.skipTLSVerify,
    ca: () => (s.skipTLSVerify ? undefined : fs.readFileSync(caFile, 'utf8')),
    token: () => fs.readFileSync(tokenFile, 'utf8').trim(),
    userAgent: 'istio-cni-ts-agent',
    ...extra,
  });
}

/** The text with the bearer token of `authorization` ("Bearer <token>") replaced by [redacted]. */
function withoutToken(text: string, authorization: string | undefined): string {
  const token = authorization?.startsWith('Bearer ') ? authorization.slice(7) : '';
  return token.length >= 4 && text.includes(token) ? text.split(token).join('[redacted]') : text;
}
