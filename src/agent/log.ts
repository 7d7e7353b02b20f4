// The agent's log output: one line per entry, Istio's layout (time, level, scope, message,
// key=value fields), written to a stream. Scopes share one sink and one level.
import { LogFields, LogLevel, Logger } from '../installer/log';

const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

export function isLogLevel(s: unknown): s is LogLevel {
  return typeof s === 'string' && s in RANK;
}

/** Istio's timestamp: UTC with microseconds. */
export function istioTime(d: Date): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

function formatValue(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]*$/.test(v) && v !== '' ? v : JSON.stringify(v);
  if (v instanceof Error) return JSON.stringify(v.message);
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

export class LogSink {
  constructor(
    public level: LogLevel,
    private readonly out: NodeJS.WritableStream = process.stdout,
  ) {}

  enabled(level: LogLevel): boolean {
    return RANK[level] >= RANK[this.level];
  }

  write(level: LogLevel, scope: string, msg: string, fields?: LogFields, time?: string): void {
    if (!this.enabled(level)) return;
    let line = `${time ?? istioTime(new Date())}\t${level}\t${scope}\t${msg.replace(/\n/g, '\n\t')}`;
    if (fields) {
      const kv = Object.entries(fields)
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => `${k}=${formatValue(v)}`);
      if (kv.length > 0) line += `\t${kv.join(' ')}`;
    }
    this.out.write(line + '\n');
  }
}

export class ScopedLogger implements Logger {
  constructor(
    readonly sink: LogSink,
    readonly scope: string,
    private readonly base?: LogFields,
  ) {}

  withScope(scope: string): ScopedLogger {
    return new ScopedLogger(this.sink, scope, this.base);
  }

  log(level: LogLevel, msg: string, fields?: LogFields, time?: string): void {
    this.sink.write(level, this.scope, msg, this.base ? { ...this.base, ...fields } : fields, time);
  }
  debug(msg: string, fields?: LogFields): void {
    this.log('debug', msg, fields);
  }
  info(msg: string, fields?: LogFields): void {
    this.log('info', msg, fields);
  }
  warn(msg: string, fields?: LogFields): void {
    this.log('warn', msg, fields);
  }
  error(msg: string, fields?: LogFields): void {
    this.log('error', msg, fields);
  }
}
