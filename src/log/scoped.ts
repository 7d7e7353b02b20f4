// The agent's loggers: one per scope (cni-agent, cni-plugin, repair, ...), all over one core
// that holds the per-scope levels (--log_output_level), the --log_caller and
// --log_stacktrace_level choices, the redactor, and the backend that writes lines. The backend
// is an interface: winston today (winston-backend.ts), anything that takes a LogRecord tomorrow.
import { LogFields, LogRecord } from './format';
import { LogLevel, ScopeLevels, Threshold, passes } from './levels';
import { Logger, PluginRunLogger } from './logger';
import { Redactor } from './redact';

export interface LogBackend {
  /** Renders and writes one entry. Must not throw. */
  write(rec: LogRecord): void;
  /** Resolves once what was written has reached its targets. */
  close(): Promise<void>;
}

export interface LogCoreOptions {
  levels?: ScopeLevels;
  /** Scopes whose lines carry the caller's file:line (`all` = every scope). */
  callers?: ReadonlySet<string>;
  /** Per-scope level from which a stack trace is added (default none). */
  stackLevels?: ScopeLevels;
  now?: () => Date;
}

export class LogCore {
  readonly levels: ScopeLevels;
  readonly redactor = new Redactor();
  private readonly callers: ReadonlySet<string>;
  private readonly stackLevels: ScopeLevels;
  private readonly now: () => Date;

  constructor(
    readonly backend: LogBackend,
    o: LogCoreOptions = {},
  ) {
    this.levels = o.levels ?? new ScopeLevels();
    this.callers = o.callers ?? new Set();
    this.stackLevels = o.stackLevels ?? new ScopeLevels('none');
    this.now = o.now ?? (() => new Date());
  }

  emit(scope: string, level: LogLevel, msg: string, fields?: LogFields, time?: string): void {
    const rec = this.record(scope, level, msg, fields, time);
    if (rec) this.backend.write(rec);
  }

  /** The entry as it would be written now (time, caller and stack taken here), or undefined when the scope's level drops it. */
  record(scope: string, level: LogLevel, msg: string, fields?: LogFields, time?: string): LogRecord | undefined {
    if (!this.levels.enabled(scope, level)) return undefined;
    const wantCaller = this.callers.has(scope) || this.callers.has('all');
    const wantStack = this.stackLevels.enabled(scope, level);
    const frames = wantCaller || wantStack ? callFrames() : [];
    return {
      level,
      time: time ?? this.now(),
      scope,
      msg,
      fields,
      caller: wantCaller ? frames[0]?.short : undefined,
      stack: wantStack ? frames.map((f) => f.line).join('\n') : undefined,
    };
  }
}

export class ScopedLogger implements Logger {
  constructor(
    readonly core: LogCore,
    readonly scope: string,
  ) {}

  withScope(scope: string): ScopedLogger {
    return new ScopedLogger(this.core, scope);
  }

  enabled(level: LogLevel): boolean {
    return this.core.levels.enabled(this.scope, level);
  }

  /** `time`: a relayed entry's own time, already in Istio's layout. */
  log(level: LogLevel, msg: string, fields?: LogFields, time?: string): void {
    this.core.emit(this.scope, level, msg, fields, time);
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

  /** Never print this text (a bearer token), in any scope. */
  redact(secret: string | undefined): void {
    this.core.redactor.add(secret);
  }

  /**
   * The logger of one plugin run served in this process (the shim's fast path): the entries the
   * plugin would have relayed through log.sock, written on this scope, filtered first by the
   * run's plugin_log_level as the plugin itself would.
   */
  pluginRun(opts: { held?: boolean } = {}): PluginRunLogger {
    let threshold: Threshold = 'info';
    // Held: each entry is made when it is logged (its time and caller are the call's) and written
    // by flush(), so a caller can answer first and write its lines after (a line written to a
    // pipe is a synchronous write on the answer's path).
    const held: LogRecord[] | undefined = opts.held ? [] : undefined;
    const at = (level: LogLevel) => (msg: string, fields?: LogFields) => {
      if (!passes(level, threshold)) return;
      if (!held) return this.log(level, msg, fields);
      const rec = this.core.record(this.scope, level, msg, fields);
      if (rec) held.push(rec);
    };
    return {
      debug: at('debug'),
      info: at('info'),
      warn: at('warn'),
      error: at('error'),
      configure: (c) => {
        threshold = c.level;
      },
      redact: (secret) => this.redact(secret),
      flush: async () => {
        for (const rec of held?.splice(0) ?? []) this.core.backend.write(rec);
      },
    };
  }
}

interface Frame {
  /** The stack line as V8 prints it. */
  line: string;
  /** zap's short caller: the last directory and the file, with the line number. */
  short: string;
}

/** The caller's frames, without this module's and Node's own. */
function callFrames(): Frame[] {
  const stack = new Error().stack ?? '';
  const out: Frame[] = [];
  for (const raw of stack.split('\n').slice(1)) {
    const m = /\(?([^()\s]+):(\d+):\d+\)?$/.exec(raw.trim());
    if (!m || m[1].includes(`${'/'}log${'/'}scoped.`) || m[1].startsWith('node:')) continue;
    const parts = m[1].split('/');
    out.push({ line: raw.trim(), short: `${parts.slice(-2).join('/')}:${m[2]}` });
  }
  return out;
}
