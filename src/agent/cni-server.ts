// The agent end of the CNI fast path (docs/payload.md): the shim the runtime executes
// (native/cni-shim.c) sends the whole CNI request over <CNI_AGENT_RUN_DIR>/cni-shim.sock, and the
// agent answers it with the same handleCni the standalone plugin runs, so both give the same
// bytes. The agent is already warm: the code is loaded, the addon is open and the API
// connection is kept alive, which is what makes this path fast.
//
// The socket is created 0600 in a directory closed to others; the shim checks both, and that
// the listening process is root, before it sends anything (it falls back to the standalone
// plugin otherwise). The agent serves only root peers, at most LIMITS.cniShim connections and
// bytes at once, and each request must arrive whole within SHIM_REQUEST_DEADLINE_MS of accept.
// Requests are served with the agent's own run dir: a config naming another is refused.
//
// Records on a SOCK_SEQPACKET socket (the addon's, src/netns/seqpacket.ts: Node's net cannot
// receive descriptors); integers big-endian u32; bodies in records of at most CHUNK bytes:
//   request  "ICTSCNI2" | env length | stdin length | netns state  (+ the netns fd, SCM_RIGHTS)
//            then env ("KEY=VALUE\0"...) and stdin
//   ack      "ICTSACK1"                        as soon as the request is read
//   reply    "ICTSRES1" | exit code | stdout length, then stdout
// The pod's netns comes as a descriptor the shim opened (O_PATH) where the runtime's mounts are:
// CNI_NETNS is a path in the runtime's mount namespace, which this container may not see. The
// request's env keeps CNI_NETNS as the runtime gave it, and the netns handle every effect goes
// through is opened from the descriptor (/proc/self/fd/<fd>) but named CNI_NETNS, so every
// message names the same path as the standalone plugin's.
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { CniOutput, versionResult } from '../cni/skel';
import { Env } from '../cni/env';
import { HttpsKubeClient, KubeClient } from '../kube/client';
import { KUBECONFIG_NAME, parseKubeconfig } from '../kube/kubeconfig';
import { handleCni } from '../plugin/istio';
import { DEFAULT_AGENT_RUN_DIR } from '../plugin/config';
import { openPodNetns } from '../netns/handle';
import { PluginDeps } from '../plugin/ports';
import { realDeps } from '../plugin/wiring';
import { PluginRunLogger } from '../log/logger';
import { SeqpacketListener, SeqpacketSocket, closeFd, peerCredentials } from '../netns/seqpacket';
import { ScopedLogger } from '../log/scoped';
import { CniError, ErrorCode, errorResult } from '../cni/errors';
import { field, isObject } from '../cni/json';
import { ByteBudget, LIMITS, SHIM_REQUEST_DEADLINE_MS } from './limits';
import { refusalLogger, servedUid } from './listener';
import { NodePodCache, withPodCache } from './pod-cache';

export const SHIM_SOCKET_NAME = 'cni-shim.sock';
export const REQUEST_MAGIC = 'ICTSCNI2';
export const ACK_MAGIC = 'ICTSACK1';
export const REPLY_MAGIC = 'ICTSRES1';
/** Largest record of a body (the shim's CHUNK). */
export const CHUNK = 32768;
/** Limits that match the shim's. */
export const MAX_ENV_BYTES = 1 << 20;
export const MAX_STDIN_BYTES = 8 << 20;
/** A shim that does not take its reply by then is dropped. */
const REPLY_SEND_TIMEOUT_MS = 10_000;

export const NETNS_STATE = { none: 0, fd: 1, missing: 2 } as const;

/** What the shim could tell about CNI_NETNS: opened (a /proc/self/fd path here), or not there. */
export interface NetnsView {
  /** /proc/self/fd/<n> of the descriptor the shim sent. */
  readonly path?: string;
  /** CNI_NETNS was set but the shim could not open it (the plugin would find it missing). */
  readonly missing?: boolean;
}

export type CniHandler = (env: Env, stdin: string, netns?: NetnsView) => Promise<CniOutput>;

export interface CniServer {
  readonly socketPath: string;
  /** Requests answered (for tests and metrics). */
  readonly served: () => number;
  close(): Promise<void>;
}

export interface RequestHeader {
  envLen: number;
  stdinLen: number;
  netns: number;
}

/** The first record of a request; throws when it is not one. */
export function parseHeader(rec: Buffer): RequestHeader {
  if (rec.length !== 20 || rec.toString('latin1', 0, 8) !== REQUEST_MAGIC) throw new Error('not a CNI shim request');
  const h = { envLen: rec.readUInt32BE(8), stdinLen: rec.readUInt32BE(12), netns: rec.readUInt32BE(16) };
  if (h.envLen > MAX_ENV_BYTES) throw new Error(`environment of ${h.envLen} bytes is over the limit`);
  if (h.stdinLen > MAX_STDIN_BYTES) throw new Error(`stdin of ${h.stdinLen} bytes is over the limit`);
  if (h.netns > NETNS_STATE.missing) throw new Error(`unknown netns state ${h.netns}`);
  return h;
}

/** env ("KEY=VALUE\0"...) and stdin from the request body. */
export function parseBody(body: Buffer, envLen: number): { env: Record<string, string>; stdin: string } {
  const env: Record<string, string> = Object.create(null);
  for (const entry of body.toString('utf8', 0, envLen).split('\0')) {
    const eq = entry.indexOf('=');
    if (eq > 0) env[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return { env: { ...env }, stdin: body.toString('utf8', envLen) };
}

/** The reply as records: the header, then stdout in CHUNK-sized pieces. */
export function encodeReply(out: CniOutput): Buffer[] {
  const body = Buffer.from(out.stdout, 'utf8');
  const head = Buffer.alloc(16);
  head.write(REPLY_MAGIC, 0, 'latin1');
  head.writeUInt32BE(out.exitCode >>> 0, 8);
  head.writeUInt32BE(body.length, 12);
  const recs = [head];
  for (let off = 0; off < body.length; off += CHUNK) recs.push(body.subarray(off, off + CHUNK));
  return recs;
}

/**
 * The request's cni_agent_run_dir (read as the plugin reads it: the last key that matches
 * case-insensitively, null or "" = the default) when it is not the agent's own `runDir`;
 * undefined when they agree or the config is unreadable (handleCni then reports that).
 */
export function foreignRunDir(stdin: string, runDir: string): string | undefined {
  let obj: unknown;
  try {
    obj = JSON.parse(stdin);
  } catch {
    return undefined;
  }
  if (!isObject(obj)) return undefined;
  const v = field(obj, 'cni_agent_run_dir');
  const asked = typeof v === 'string' && v !== '' ? v : DEFAULT_AGENT_RUN_DIR;
  if (typeof v !== 'string' && v !== undefined) return undefined;
  return path.isAbsolute(asked) && path.resolve(asked) === path.resolve(runDir) ? undefined : asked;
}

/**
 * handleCni as the agent runs it: production deps for the request's own environment, logs into
 * the agent's output, and one API client for the kubeconfig in the agent's `runDir`, kept alive
 * across requests (replaced when the file changes). A request whose config names another run
 * dir is refused (code 7): the shim checked that directory, and the standalone plugin would read
 * that one's kubeconfig, so the agent must not quietly answer from its own.
 * With `pods` (this node's pods, watched), a pod lookup the cache can vouch for costs no GET.
 */
export function agentCniHandler(pluginLog: ScopedLogger, opts: { runDir: string; pods?: Pick<NodePodCache, 'lookup'> }): CniHandler & { close(): void } {
  const { pods } = opts;
  const runDir = path.resolve(opts.runDir);
  let current: { text: string; token?: string; client: HttpsKubeClient } | undefined;
  const kube = async (log: PluginRunLogger): Promise<KubeClient> => {
    const file = path.join(runDir, KUBECONFIG_NAME);
    let text: string;
    try {
      // Synchronous: a small local file, and a thread-pool round trip costs more under load.
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new Error(`kubeconfig ${file}: ${err.code === 'ENOENT' ? 'does not exist (is the istio-cni node agent running?)' : err.message}`);
    }
    // Every request has a logger of its own: each must learn the token, cached client or not.
    const redact = (token: string | undefined) => log.redact?.(token);
    const cached = current;
    if (cached && cached.text === text) {
      redact(cached.token);
      return cached.client;
    }
    const ep = parseKubeconfig(text, file, (p) => fs.readFileSync(p, 'utf8'));
    redact(ep.token);
    const client = new HttpsKubeClient(ep);
    cached?.client.close();
    current = { text, token: ep.token, client };
    return client;
  };
  const handler = async (env: Env, stdin: string, view: NetnsView = {}): Promise<CniOutput> => {
    const foreign = env.CNI_COMMAND === 'VERSION' ? undefined : foreignRunDir(stdin, runDir);
    if (foreign !== undefined) return refuseRunDir(stdin, foreign, runDir);
    // Held until the reply is out: serveOne sends it in the microtasks that follow this
    // handler's return, before the setImmediate below writes the lines.
    const log = pluginLog.pluginRun({ held: true });
    const base = realDeps(env);
    // CNI_NETNS as the shim saw it: its descriptor (the runtime's path may not even be visible in
    // the agent's mount namespace), or missing. The handle is opened from the descriptor and
    // named CNI_NETNS, so every message reads as the standalone plugin's.
    const requested = env.CNI_NETNS ?? '';
    const deps: PluginDeps = {
      ...base,
      log,
      kube: pods ? async () => withPodCache(await kube(log), pods) : () => kube(log),
      netns: {
        open: async (p) => {
          if (p !== requested || p === '') return base.netns.open(p);
          if (view.missing) return { state: 'missing' };
          return openPodNetns(view.path ?? p, p);
        },
        isDualStack: base.netns.isDualStack,
        // CNI_NETNS may not be visible here: the shim checks it once the reply is in.
        stillNamed: async (p, ns) => (p === requested ? true : base.netns.stillNamed(p, ns)),
      },
    };
    try {
      return await handleCni(env, stdin, deps);
    } finally {
      setImmediate(() => void log.flush?.());
    }
  };
  return Object.assign(handler, {
    close: () => {
      current?.client.close();
      current = undefined;
    },
  });
}

/** The CNI error for a config whose cni_agent_run_dir is not the agent's. */
function refuseRunDir(stdin: string, asked: string, runDir: string): CniOutput {
  const e = new CniError(
    ErrorCode.InvalidConfig,
    'invalid network config key "cni_agent_run_dir"',
    `cni_agent_run_dir ${JSON.stringify(asked)} is not the run dir of the istio-cni node agent that answered (${runDir}); ` +
      "the network config must name the agent's CNI_AGENT_RUN_DIR",
  );
  return { stdout: `${JSON.stringify(errorResult(requestVersion(stdin), e))}\n`, exitCode: 1 };
}

function requestVersion(stdin: string): string {
  const v = (versionResult(stdin) as { cniVersion?: unknown }).cniVersion;
  return typeof v === 'string' ? v : '1.1.0';
}

/** One shim connection: the request (and its netns descriptor), ack, answer, reply, close. */
async function serveOne(sock: SeqpacketSocket, handle: CniHandler, agentLog: ScopedLogger, budget: ByteBudget, done: () => void): Promise<void> {
  const fds: number[] = [];
  let held = 0;
  // One deadline for the whole request, not a fresh one per record: a client that drips a
  // record every few seconds is dropped all the same.
  const deadline = Date.now() + SHIM_REQUEST_DEADLINE_MS;
  const left = () => Math.max(0, deadline - Date.now());
  try {
    const first = await sock.recv({ maxBytes: 64, maxFds: 1, timeoutMs: left() });
    fds.push(...first.fds);
    if (first.data.length === 0) return; // the shim went away
    if (first.truncated || first.controlTruncated) throw new Error('oversized request header');
    const h = parseHeader(first.data);
    if ((h.netns === NETNS_STATE.fd) !== (fds.length === 1)) throw new Error('netns descriptor and netns state disagree');
    const total = h.envLen + h.stdinLen;
    if (!budget.take(total)) {
      throw new Error(`a request of ${total} bytes would pass the ${budget.max} bytes buffered at once for all shim requests`);
    }
    held = total;
    const parts: Buffer[] = [];
    for (let got = 0; got < total;) {
      const rec = await sock.recv({ maxBytes: CHUNK, timeoutMs: left() });
      if (rec.data.length === 0 || rec.truncated || got + rec.data.length > total) throw new Error('request body cut short or too long');
      parts.push(rec.data);
      got += rec.data.length;
    }
    const { env, stdin } = parseBody(Buffer.concat(parts), h.envLen);
    parts.length = 0;
    budget.give(held);
    held = 0;
    await sock.send(Buffer.from(ACK_MAGIC, 'latin1'), undefined, REPLY_SEND_TIMEOUT_MS);
    const view: NetnsView = h.netns === NETNS_STATE.fd ? { path: `/proc/self/fd/${fds[0]}` } : h.netns === NETNS_STATE.missing ? { missing: true } : {};
    let out: CniOutput;
    try {
      out = await handle(env, stdin, view);
    } catch (e) {
      // handleCni answers every failure itself; this is a bug. No reply: the shim then runs the
      // standalone plugin, which gives the runtime a proper answer.
      agentLog.error('CNI request failed inside the agent', { error: (e as Error)?.message ?? String(e) });
      return;
    }
    for (const rec of encodeReply(out)) await sock.send(rec, undefined, REPLY_SEND_TIMEOUT_MS);
    done();
  } catch (e) {
    if (!sock.closed) agentLog.warn('dropped a request on the CNI shim socket', { error: (e as Error).message });
  } finally {
    budget.give(held);
    for (const fd of fds) closeFd(fd);
    sock.close();
  }
}

/** Serves the shim's requests on `socketPath` with `handle` (default: agentCniHandler for the socket's directory). */
export async function startCniServer(
  socketPath: string,
  opts: { pluginLog: ScopedLogger; agentLog: ScopedLogger; handle?: CniHandler; pods?: Pick<NodePodCache, 'lookup'> },
): Promise<CniServer> {
  const { agentLog } = opts;
  const own = opts.handle ? undefined : agentCniHandler(opts.pluginLog, { runDir: path.dirname(socketPath), pods: opts.pods });
  const handle: CniHandler = opts.handle ?? own!;
  const limits = LIMITS.cniShim;
  const budget = new ByteBudget(limits.maxBufferedBytes);
  const report = refusalLogger(agentLog, socketPath);
  let served = 0;
  let paused = false;
  const open = new Set<SeqpacketSocket>();
  await fsp.mkdir(path.dirname(socketPath), { recursive: true, mode: 0o750 });
  // 0600 from the start (bindUnixSocket); a non-socket at the path is refused.
  const listener: SeqpacketListener = SeqpacketListener.listen(
    socketPath,
    () => {
      while (open.size < limits.maxConnections) {
        const sock = listener.accept();
        if (!sock) return;
        const cred = peerOf(sock);
        if (!cred || !servedUid(cred.uid)) {
          sock.close();
          if (cred) report(cred.uid, cred.pid);
          continue;
        }
        open.add(sock);
        void serveOne(sock, handle, agentLog, budget, () => served++).finally(() => {
          open.delete(sock);
          if (paused && open.size < limits.maxConnections) {
            paused = false;
            listener.resume();
          }
        });
      }
      // At the cap: stop accepting; shims wait in the backlog (or fall back after their ack timeout).
      paused = true;
      listener.pause();
    },
    { mode: 0o600, backlog: 512 },
  );
  agentLog.info('CNI fast-path server listening', { socket: socketPath });
  return {
    socketPath,
    served: () => served,
    close: async () => {
      listener.close();
      // In-flight requests are cut: their shims fall back to the standalone plugin.
      for (const s of open) s.close();
      own?.close();
    },
  };
}

function peerOf(sock: SeqpacketSocket): { uid: number; pid: number } | undefined {
  try {
    return peerCredentials(sock.fd);
  } catch {
    return undefined;
  }
}
