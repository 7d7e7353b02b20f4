// The agent end of the CNI fast path (docs/payload.md): the shim the runtime executes
// (native/cni-shim.c) sends the whole CNI request over <CNI_AGENT_RUN_DIR>/cni-shim.sock, and the
// agent answers it with the same handleCni the standalone plugin runs, so both give the same
// bytes. The agent is already warm: the code is loaded, the addon is open and the API
// connection is kept alive, which is what makes this path fast.
//
// The socket is created 0600 in a directory closed to others; the shim checks both, and that
// the listening process is root, before it sends anything (it falls back to the standalone
// plugin otherwise).
//
// Frames (integers are big-endian u32):
//   request  "ICTSCNI1" | env length | "KEY=VALUE\0"... | stdin length | stdin
//   ack      "ICTSACK1"                        as soon as the request is read
//   reply    "ICTSRES1" | exit code | stdout length | stdout
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { CniOutput } from '../cni/skel';
import { Env } from '../cni/env';
import { HttpsKubeClient, KubeClient } from '../kube/client';
import { KUBECONFIG_NAME, parseKubeconfig } from '../kube/kubeconfig';
import { handleCni } from '../plugin/istio';
import { Fields, Logger, NetnsState, PluginDeps, realDeps } from '../plugin/deps';
import { LogFields, LogLevel } from '../installer/log';
import { ScopedLogger } from './log';

export const SHIM_SOCKET_NAME = 'cni-shim.sock';
export const REQUEST_MAGIC = 'ICTSCNI1';
export const ACK_MAGIC = 'ICTSACK1';
export const REPLY_MAGIC = 'ICTSRES1';
/** Limits that match the shim's. */
export const MAX_ENV_BYTES = 1 << 20;
export const MAX_STDIN_BYTES = 8 << 20;
/** A client that has not sent its whole request by then is dropped. */
const REQUEST_TIMEOUT_MS = 10_000;

export type CniHandler = (env: Env, stdin: string) => Promise<CniOutput>;

export interface CniServer {
  readonly socketPath: string;
  /** Requests answered (for tests and metrics). */
  readonly served: () => number;
  close(): Promise<void>;
}

/** Parses one request frame; undefined while incomplete; throws when it can never be valid. */
export function parseRequest(buf: Buffer): { env: Record<string, string>; stdin: string } | undefined {
  if (buf.length < 8) {
    if (!Buffer.from(REQUEST_MAGIC).subarray(0, buf.length).equals(buf)) throw new Error('not a CNI shim request');
    return undefined;
  }
  if (buf.toString('latin1', 0, 8) !== REQUEST_MAGIC) throw new Error('not a CNI shim request');
  if (buf.length < 12) return undefined;
  const envLen = buf.readUInt32BE(8);
  if (envLen > MAX_ENV_BYTES) throw new Error(`environment of ${envLen} bytes is over the limit`);
  if (buf.length < 12 + envLen + 4) return undefined;
  const stdinLen = buf.readUInt32BE(12 + envLen);
  if (stdinLen > MAX_STDIN_BYTES) throw new Error(`stdin of ${stdinLen} bytes is over the limit`);
  const end = 16 + envLen + stdinLen;
  if (buf.length < end) return undefined;
  if (buf.length > end) throw new Error('trailing bytes after the request');
  const env: Record<string, string> = Object.create(null);
  for (const entry of buf.toString('utf8', 12, 12 + envLen).split('\0')) {
    const eq = entry.indexOf('=');
    if (eq > 0) env[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return { env: { ...env }, stdin: buf.toString('utf8', 16 + envLen, end) };
}

export function encodeReply(out: CniOutput): Buffer {
  const body = Buffer.from(out.stdout, 'utf8');
  const head = Buffer.alloc(16);
  head.write(REPLY_MAGIC, 0, 'latin1');
  head.writeUInt32BE(out.exitCode >>> 0, 8);
  head.writeUInt32BE(body.length, 12);
  return Buffer.concat([head, body]);
}

/** The plugin's log entries in the agent's output, on the cni-plugin scope, as log.sock relays them. */
function agentPluginLogger(pluginLog: ScopedLogger): Logger {
  const rank: Record<string, number> = { debug: 0, info: 1, warn: 2, error: 3, fatal: 4, none: 5 };
  let threshold = rank.info;
  const secrets: string[] = [];
  const scrub = (v: unknown): unknown => {
    if (typeof v !== 'string') return v;
    let s = v;
    for (const t of secrets) if (s.includes(t)) s = s.split(t).join('[redacted]');
    return s;
  };
  const emit = (level: LogLevel) => (msg: string, fields?: Fields) => {
    if (rank[level] < threshold) return;
    const f: LogFields = {};
    for (const [k, v] of Object.entries(fields ?? {})) if (v !== undefined) f[k] = scrub(v instanceof Error ? v.message : v);
    pluginLog.log(level, scrub(msg) as string, f);
  };
  const setLevel = (level: string) => {
    threshold = rank[level] ?? rank.info;
  };
  // Both the older (setLevel) and the newer (configure/redact) Logger shapes are served.
  return Object.assign(
    { debug: emit('debug'), info: emit('info'), warn: emit('warn'), error: emit('error') },
    {
      setLevel,
      configure: (c: { level: string }) => setLevel(c.level),
      redact: (secret: string | undefined) => {
        if (secret && secret.length >= 6 && !secrets.includes(secret)) secrets.push(secret);
      },
      flush: async () => undefined,
    },
  );
}

/**
 * handleCni as the agent runs it: production deps for the request's own environment, logs into
 * the agent's output, and one API client per kubeconfig content, kept alive across requests.
 */
export function agentCniHandler(pluginLog: ScopedLogger): CniHandler & { close(): void } {
  const clients = new Map<string, { text: string; client: HttpsKubeClient }>();
  const kube = async (agentRunDir: string, log: Logger): Promise<KubeClient> => {
    const file = path.join(agentRunDir, KUBECONFIG_NAME);
    let text: string;
    try {
      // Synchronous: a small local file, and a thread-pool round trip costs more under load.
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new Error(`kubeconfig ${file}: ${err.code === 'ENOENT' ? 'does not exist (is the istio-cni node agent running?)' : err.message}`);
    }
    const cached = clients.get(file);
    if (cached && cached.text === text) return cached.client;
    const ep = parseKubeconfig(text, file, (p) => fs.readFileSync(p, 'utf8'));
    (log as { redact?: (s: string | undefined) => void }).redact?.(ep.token);
    const client = new HttpsKubeClient(ep);
    cached?.client.close();
    clients.set(file, { text, client });
    return client;
  };
  const handler = (env: Env, stdin: string): Promise<CniOutput> => {
    const log = agentPluginLogger(pluginLog);
    const base = realDeps(env);
    const deps: PluginDeps = { ...base, log, kube: (dir) => kube(dir, log), netns: { ...base.netns, inspect: inspectNetnsSync } };
    return handleCni(env, stdin, deps);
  };
  return Object.assign(handler, {
    close: () => {
      for (const c of clients.values()) c.client.close();
      clients.clear();
    },
  });
}

/** realNetns().inspect with two synchronous stats (local, microseconds): the same answers. */
async function inspectNetnsSync(netnsPath: string): Promise<NetnsState> {
  const stat = (p: string) => {
    try {
      return fs.statSync(p, { bigint: true });
    } catch {
      return undefined;
    }
  };
  const target = stat(netnsPath);
  const own = stat('/proc/self/ns/net');
  if (!target) return 'missing';
  if (!own || target.dev !== own.dev) return 'not-netns';
  return target.ino === own.ino ? 'own' : 'ok';
}

async function removeStaleSocket(p: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = await fsp.lstat(p);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`${p} exists and is not a socket; refusing to replace it`);
  await fsp.rm(p, { force: true });
}

/** Serves the shim's requests on `socketPath` with `handle` (default: agentCniHandler). */
export async function startCniServer(
  socketPath: string,
  opts: { pluginLog: ScopedLogger; agentLog: ScopedLogger; handle?: CniHandler },
): Promise<CniServer> {
  const { agentLog } = opts;
  const own = opts.handle ? undefined : agentCniHandler(opts.pluginLog);
  const handle: CniHandler = opts.handle ?? own!;
  let served = 0;
  const open = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    open.add(sock);
    sock.on('close', () => open.delete(sock));
    sock.on('error', () => undefined);
    sock.setTimeout(REQUEST_TIMEOUT_MS, () => sock.destroy());
    let buf: Buffer = Buffer.alloc(0);
    let done = false;
    sock.on('data', (chunk: Buffer) => {
      if (done) return;
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      let req: ReturnType<typeof parseRequest>;
      try {
        req = parseRequest(buf);
      } catch (e) {
        done = true;
        agentLog.warn('dropped a bad request on the CNI shim socket', { error: (e as Error).message });
        sock.destroy();
        return;
      }
      if (!req) return;
      done = true;
      sock.setTimeout(0);
      sock.write(ACK_MAGIC);
      const request = req;
      handle(request.env, request.stdin).then(
        (out) => {
          served++;
          sock.end(encodeReply(out));
        },
        (e: unknown) => {
          // handleCni answers every failure itself; this is a bug. No reply: the shim then runs
          // the standalone plugin, which gives the runtime a proper answer.
          agentLog.error('CNI request failed inside the agent', { error: (e as Error)?.message ?? String(e) });
          sock.destroy();
        },
      );
    });
  });
  await fsp.mkdir(path.dirname(socketPath), { recursive: true, mode: 0o750 });
  await removeStaleSocket(socketPath);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // 0600 from the start: no moment where another user could connect.
    const old = process.umask(0o177);
    try {
      server.listen(socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    } finally {
      process.umask(old);
    }
  });
  await fsp.chmod(socketPath, 0o600);
  agentLog.info('CNI fast-path server listening', { socket: socketPath });
  return {
    socketPath,
    served: () => served,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // In-flight requests are cut: their shims fall back to the standalone plugin.
        for (const s of open) s.destroy();
      }).then(async () => {
        own?.close();
        await fsp.rm(socketPath, { force: true });
      }),
  };
}
