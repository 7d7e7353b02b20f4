// The plugin log relay (Istio's cni/pkg/log/uds.go): the CNI plugin runs once per pod, outside
// any container log, so it POSTs its JSON log lines to `<run dir>/log.sock` and the agent prints
// them in its own output on the `cni-plugin` scope, with the plugin's time and fields (pod name,
// namespace, ...) kept.
//
// Differences from upstream, on purpose: the socket is 0600 (only root, which kubelet runs the
// plugin as, can write to it; upstream uses 0666), a request body is capped at 1 MiB, and a stale
// path is only removed when it is a socket.
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as http from 'node:http';
import * as path from 'node:path';
import { LogFields, LogLevel } from '../log/logger';
import { istioTimestamp } from '../log/format';
import { ScopedLogger } from '../log/scoped';

export const LOG_SOCKET_NAME = 'log.sock';
export const LOG_PATH = '/log';
const MAX_BODY = 1 << 20;
const LEVELS = new Set<LogLevel>(['debug', 'info', 'warn', 'error']);
// RFC 3339, as zap writes it.
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

export interface PluginLogEntry {
  level: LogLevel;
  time: string;
  msg: string;
  fields: LogFields;
}

/** One plugin log line; undefined when it lacks a usable level, time or message (upstream drops those too). */
export function parsePluginLogLine(line: string): PluginLogEntry | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return undefined;
  const r = raw as Record<string, unknown>;
  if (typeof r.msg !== 'string' || typeof r.level !== 'string' || typeof r.time !== 'string') return undefined;
  if (!LEVELS.has(r.level as LogLevel) || !RFC3339.test(r.time)) return undefined;
  const t = new Date(r.time);
  if (Number.isNaN(t.getTime())) return undefined;
  const fields: LogFields = {};
  for (const k of Object.keys(r).sort()) {
    if (k !== 'msg' && k !== 'level' && k !== 'time') Object.defineProperty(fields, k, { value: r[k], enumerable: true });
  }
  return { level: r.level as LogLevel, time: istioTimestamp(t), msg: r.msg.trim(), fields };
}

/** The body of POST /log: a JSON array of log lines (strings). */
export function parsePluginLogBody(body: string): PluginLogEntry[] | undefined {
  let lines: unknown;
  try {
    lines = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (!Array.isArray(lines) || !lines.every((l) => typeof l === 'string')) return undefined;
  return (lines as string[]).map(parsePluginLogLine).filter((e): e is PluginLogEntry => e !== undefined);
}

export interface LogServer {
  socketPath: string;
  close(): Promise<void>;
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

/**
 * Serves `POST /log` on the unix socket `socketPath`. `pluginLog` is the `cni-plugin` scope of
 * the agent's logger (so relayed entries follow the agent's level). Always answers 200 once the
 * body is read, like upstream: the plugin must never wait on its logs.
 */
export async function startLogServer(socketPath: string, pluginLog: ScopedLogger, agentLog: ScopedLogger): Promise<LogServer> {
  await fsp.mkdir(path.dirname(socketPath), { recursive: true, mode: 0o750 });
  await removeStaleSocket(socketPath);
  const server = http.createServer((req, res) => {
    if (req.method !== 'POST' || (req.url ?? '').split('?')[0] !== LOG_PATH) {
      res.writeHead(404).end();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        tooLarge = true;
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      res.writeHead(200).end();
      if (tooLarge) {
        agentLog.warn('dropped a CNI plugin log report larger than 1 MiB', { bytes: size });
        return;
      }
      const entries = parsePluginLogBody(Buffer.concat(chunks).toString('utf8'));
      if (entries === undefined) {
        agentLog.error('failed to parse CNI plugin logs: expected a JSON array of strings');
        return;
      }
      // Entries of one report are printed together (one synchronous loop), never interleaved.
      for (const e of entries) pluginLog.log(e.level, e.msg, e.fields, e.time);
    });
    req.on('error', (err) => agentLog.error('failed to read log report from cni plugin', { error: String(err) }));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // Created 0600 from the start: no window where another user could connect.
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
  agentLog.info('CNI plugin log server listening', { socket: socketPath });
  return {
    socketPath,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
      }).then(() => fsp.rm(socketPath, { force: true })),
  };
}
