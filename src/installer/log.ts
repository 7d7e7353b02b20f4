// The logging surface the installer and agent use. Kept as a plain interface so library code
// can be driven by tests with a recording logger and by the agent with its scoped console logger.

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

export const nullLogger: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
};

/** A logger that keeps every entry, for tests. */
export class MemoryLogger implements Logger {
  readonly entries: { level: LogLevel; msg: string; fields?: LogFields }[] = [];
  debug(msg: string, fields?: LogFields): void {
    this.entries.push({ level: 'debug', msg, fields });
  }
  info(msg: string, fields?: LogFields): void {
    this.entries.push({ level: 'info', msg, fields });
  }
  warn(msg: string, fields?: LogFields): void {
    this.entries.push({ level: 'warn', msg, fields });
  }
  error(msg: string, fields?: LogFields): void {
    this.entries.push({ level: 'error', msg, fields });
  }
  has(level: LogLevel, re: RegExp): boolean {
    return this.entries.some((e) => e.level === level && re.test(e.msg));
  }
}
