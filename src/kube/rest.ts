// A small Kubernetes REST client for the node agent over node's http/https: JSON requests
// (GET, PATCH, DELETE, POST) and watch streams. The agent needs a handful of calls, so this is
// used instead of @kubernetes/client-node (see docs/installer.md, "Repair controller", for the
// measurements behind that choice). The CNI plugin never loads this file.
//
// Credentials are re-read for every request: the service-account token rotates, and reading two
// small files costs nothing next to a TLS handshake. The https.Agent (keep-alive) is rebuilt only
// when the CA bundle changes.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as path from 'node:path';
import { InstallConfig } from '../installer/config';
import { joinHostPort } from '../installer/kubeconfig';
import { KubeError } from './client';

export interface RestConfig {
  /** Base URL, `https://host:port` (or http for local tests). */
  readonly server: string;
  /** PEM CA bundle to trust; undefined = the system's. Called per request. */
  readonly ca?: () => string | undefined;
  readonly insecureSkipTlsVerify?: boolean;
  /** Bearer token; called per request. */
  readonly token?: () => string | undefined;
  /** Per-request timeout for non-watch calls; default 10 s. */
  readonly timeoutMs?: number;
  /** Largest response body accepted for non-watch calls; default 64 MiB (a large pod list page). */
  readonly maxBodyBytes?: number;
  readonly userAgent?: string;
}

export interface RestResponse {
  status: number;
  /** Parsed JSON when the body is JSON, else the text. */
  body: unknown;
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

/** The API's Status message, if the body is one, kept short. */
export function statusMessage(body: unknown): string {
  const m = typeof body === 'object' && body !== null ? (body as { message?: unknown }).message : undefined;
  return typeof m === 'string' && m !== '' ? m.slice(0, 300) : '';
}

export class RestClient {
  private agentFor?: { ca: string | undefined; agent: http.Agent };
  private readonly tls: boolean;

  constructor(readonly cfg: RestConfig) {
    this.tls = cfg.server.startsWith('https:');
  }

  private agent(): http.Agent {
    const ca = this.tls ? this.cfg.ca?.() : undefined;
    if (this.agentFor && this.agentFor.ca === ca) return this.agentFor.agent;
    this.agentFor?.agent.destroy();
    const agent = this.tls
      ? new https.Agent({ keepAlive: true, ...(ca !== undefined ? { ca } : {}), rejectUnauthorized: !this.cfg.insecureSkipTlsVerify })
      : new http.Agent({ keepAlive: true });
    this.agentFor = { ca, agent };
    return agent;
  }

  private headers(extra: Record<string, string>): Record<string, string> {
    const token = this.cfg.token?.();
    return {
      Accept: 'application/json',
      'User-Agent': this.cfg.userAgent ?? 'istio-cni-ts-agent',
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...extra,
    };
  }

  /** Closes kept-alive sockets. */
  close(): void {
    this.agentFor?.agent.destroy();
    this.agentFor = undefined;
  }

  /** One JSON call. Resolves with any HTTP status; rejects (KubeError) only when there is no answer. */
  request(method: string, apiPath: string, opts: RequestOptions = {}): Promise<RestResponse> {
    const target = buildPath(apiPath, opts.query);
    const what = `${method} ${target}`;
    const timeoutMs = this.cfg.timeoutMs ?? 10_000;
    const maxBody = this.cfg.maxBodyBytes ?? 64 << 20;
    return new Promise((resolve, reject) => {
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
      const mod = this.tls ? https : http;
      const req = mod.request(new URL(target, this.cfg.server), { method, agent, headers, timeout: timeoutMs, signal: opts.signal }, (res) => {
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
          // An error body that echoes our credentials (a proxy, a webhook) must not reach a log.
          const status = res.statusCode ?? 0;
          const text = status >= 200 && status < 300 ? raw : withoutToken(raw, headers.Authorization);
          let body: unknown = text;
          try {
            body = text === '' ? undefined : JSON.parse(text);
          } catch {
            // not JSON: keep the text
          }
          resolve({ status, body });
        });
      });
      req.on('timeout', () => req.destroy(new KubeError(`${what}: no answer within ${timeoutMs} ms`)));
      req.on('error', (e) => reject(e instanceof KubeError ? e : new KubeError(`${what}: ${e.message}`)));
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
            const m = statusMessage(body);
            done(new KubeError(`${what}: HTTP ${status}${m ? ` (${m})` : ''}`, status));
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

/**
 * In-cluster access with the agent's service account: KUBERNETES_SERVICE_{PROTOCOL,HOST,PORT},
 * the token and CA under SERVICE_ACCOUNT_DIR (CA: KUBE_CA_FILE when set), SKIP_TLS_VERIFY.
 * Throws when KUBERNETES_SERVICE_HOST or _PORT is not set.
 */
export function inClusterRest(cfg: InstallConfig, extra: Pick<RestConfig, 'timeoutMs' | 'userAgent'> = {}): RestClient {
  if (!cfg.k8sServiceHost || !cfg.k8sServicePort) {
    throw new Error('KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set to reach the Kubernetes API');
  }
  const protocol = cfg.k8sServiceProtocol || 'https';
  const caFile = cfg.kubeCAFile || path.join(cfg.k8sServiceAccountPath, 'ca.crt');
  const tokenFile = path.join(cfg.k8sServiceAccountPath, 'token');
  return new RestClient({
    server: `${protocol}://${joinHostPort(cfg.k8sServiceHost, cfg.k8sServicePort)}`,
    insecureSkipTlsVerify: cfg.skipTLSVerify,
    ca: () => (cfg.skipTLSVerify ? undefined : fs.readFileSync(caFile, 'utf8')),
    token: () => fs.readFileSync(tokenFile, 'utf8').trim(),
    ...extra,
  });
}

/** The text with the bearer token of `authorization` ("Bearer <token>") replaced by [redacted]. */
function withoutToken(text: string, authorization: string | undefined): string {
  const token = authorization?.startsWith('Bearer ') ? authorization.slice(7) : '';
  return token.length >= 4 && text.includes(token) ? text.split(token).join('[redacted]') : text;
}
