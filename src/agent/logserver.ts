// The plugin log relay (Istio's cni/pkg/log/uds.go): the CNI plugin runs once per pod, outside
// any container log, so it POSTs its JSON log lines to `<run dir>/log.sock` and the agent prints
// them in its own output on the `cni-plugin` scope, with the plugin's time and fields (pod name,
// namespace, ...) kept.
//
// Differences from upstream, on purpose: the socket is 0600 from its creation and serves only
// root peers (kubelet runs the plugin as root; upstream uses 0666), a request body is capped at
// 1 MiB and all bodies together at SERVER_LIMITS.logSocket, connections are capped, and a stale
// path is only removed when it is a socket (src/agent/listener.ts). A relayed line cannot hurt the agent: a line longer
// than LIMITS.lineBytes, or with a field nested deeper than LIMITS.depth or longer than
// LIMITS.fieldBytes once encoded, is dropped whole and counted (istio_cni_ts_log_lines_dropped_total
// {reason}), as is a line that is not a plugin log entry (upstream drops those silently).
import * as fsp from 'node:fs/promises';
import * as http from 'node:http';
import * as path from 'node:path';
import { LogFields, LogLevel } from '../log/logger';
import { LIMITS, plainValue, istioTimestamp } from '../log/format';
import { ScopedLogger } from '../log/scoped';
import { ByteBudget, LIMITS as SERVER_LIMITS, readBody } from './limits';
import { httpServerOptions, serveHttp } from './listener';

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

/** Why a relayed line was dropped (the metric's `reason` label). */
export type DropReason = 'unparsable' | 'too_large' | 'too_deep' | 'unreadable';

/**
 * One plugin log line, or why it is dropped: not a log entry (no usable level, time or message;
 * upstream drops those too), longer than LIMITS.lineBytes, or a field over the depth or size bound.
 */
export function parsePluginLogLine(line: string): PluginLogEntry | { dropped: DropReason } {
  if (line.length > LIMITS.lineBytes) return { dropped: 'too_large' };
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    return { dropped: 'unparsable' };
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return { dropped: 'unparsable' };
  const r = raw as Record<string, unknown>;
  if (typeof r.msg !== 'string' || typeof r.level !== 'string' || typeof r.time !== 'string') return { dropped: 'unparsable' };
  if (!LEVELS.has(r.level as LogLevel) || !RFC3339.test(r.time)) return { dropped: 'unparsable' };
  const t = new Date(r.time);
  if (Number.isNaN(t.getTime())) return { dropped: 'unparsable' };
  const fields: LogFields = {};
  for (const k of Object.keys(r).sort()) {
    if (k === 'msg' || k === 'level' || k === 'time') continue;
    const { value, clip } = plainValue(r[k]);
    if (clip) return { dropped: clip };
    Object.defineProperty(fields, k, { value, enumerable: true });
  }
  return { level: r.level as LogLevel, time: istioTimestamp(t), msg: r.msg.trim(), fields };
}

/** The body of POST /log (a JSON array of log lines, strings): the entries, and the drops by reason; undefined when it is not such an array. */
export function parsePluginLogBody(body: string): { entries: PluginLogEntry[]; dropped: DropReason[] } | undefined {
  let lines: unknown;
  try {
    lines = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (!Array.isArray(lines) || !lines.every((l) => typeof l === 'string')) return undefined;
  const entries: PluginLogEntry[] = [];
  const dropped: DropReason[] = [];
  for (const line of lines as string[]) {
    const e = parsePluginLogLine(line);
    if ('dropped' in e) dropped.push(e.dropped);
    else entries.push(e);
  }
  return { entries, dropped };
}

export interface LogServer {
  socketPath: string;
  close(): Promise<void>;
}

/**
 * Serves `POST /log` on the unix socket `socketPath`. `pluginLog` is the `cni-plugin` scope of
 * the agent's logger (so relayed entries follow the agent's level). Always answers 200 once the
 * body is read, like upstream: the plugin must never wait on its logs.
 */
export async function startLogServer(
  socketPath: string,
  pluginLog: ScopedLogger,
  agentLog: ScopedLogger,
  onDrop: (reason: DropReason | 'report_too_large', lines: number) => void = () => undefined,
): Promise<LogServer> {
  await fsp.mkdir(path.dirname(socketPath), { recursive: true, mode: 0o750 });
  const budget = new ByteBudget(SERVER_LIMITS.logSocket.maxBufferedBytes);
  const server = http.createServer(httpServerOptions(), (req, res) => {
    if (req.method !== 'POST' || (req.url ?? '').split('?')[0] !== LOG_PATH) {
      res.writeHead(404).end();
      return;
    }
    readBody(req, MAX_BODY, budget, (body) => {
      res.writeHead(200).end();
      if ('refused' in body) {
        onDrop('report_too_large', 1);
        agentLog.warn(
          body.refused === 'too-large'
            ? 'dropped a CNI plugin log report larger than 1 MiB'
            : 'dropped a CNI plugin log report: too many bytes of reports are buffered at once',
          { bytes: body.size, ...(body.refused === 'over-budget' ? { limit: budget.max } : {}) },
        );
        return;
      }
      const report = parsePluginLogBody(body.text);
      if (report === undefined) {
        onDrop('unparsable', 1);
        agentLog.error('failed to parse CNI plugin logs: expected a JSON array of strings');
        return;
      }
      const byReason = new Map<DropReason, number>();
      for (const r of report.dropped) byReason.set(r, (byReason.get(r) ?? 0) + 1);
      for (const [reason, n] of byReason) {
        onDrop(reason, n);
        agentLog.warn('dropped CNI plugin log lines', { reason, lines: n });
      }
      // Entries of one report are printed together (one synchronous loop), never interleaved.
      for (const e of report.entries) pluginLog.log(e.level, e.msg, e.fields, e.time);
    });
    req.on('error', (err) => agentLog.error('failed to read log report from cni plugin', { error: String(err) }));
  });
  const listening = serveHttp(server, { path: socketPath }, SERVER_LIMITS.logSocket, agentLog);
  agentLog.info('CNI plugin log server listening', { socket: socketPath });
  return {
    socketPath,
    close: () => listening.close(),
  };
}
