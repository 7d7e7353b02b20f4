// The one logging interface every module takes. Where lines go and how they look is the
// backend's business (the agent: scoped.ts over winston; the short-lived CNI plugin:
// plugin-logger.ts); library code only ever sees this.
import type { LogFields } from './format';
import type { LogLevel, Threshold } from './levels';

export type { LogFields } from './format';
export type { LogLevel, Threshold } from './levels';

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

/**
 * The logger of one CNI plugin run (handleCni): it learns plugin_log_level and the agent's run
 * dir from the network config, the token it must hide once the kubeconfig is read, and delivers
 * what is pending at the end of the run.
 */
export interface PluginRunLogger extends Logger {
  configure?(c: { level: Threshold; agentRunDir: string }): void;
  redact?(secret: string | undefined): void;
  flush?(): Promise<unknown>;
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
