// The agent's log backend: winston, writing each entry as one line in Istio's layout (text, or
// JSON with --log_as_json) to each --log_target (stdout, stderr or a file). Lines are rendered
// by format.ts, so they are the same lines the CNI plugin's small writer produces, and scrubbed
// by the core's redactor on the way out. Not used by the CNI plugin: loading winston costs more
// than the plugin can spend per pod start (README, "Logging").
import * as fs from 'node:fs';
import winston from 'winston';
import { LogRecord, renderJson, renderText } from './format';
import { ScopeLevels } from './levels';
import { LogBackend, LogCore, LogCoreOptions, ScopedLogger } from './scoped';

/** triple-beam's MESSAGE: the finished line a winston transport writes. */
const MESSAGE = Symbol.for('message');
const RECORD = Symbol('record');

export interface AgentLogOptions extends LogCoreOptions {
  levels?: ScopeLevels;
  /** --log_as_json. */
  json?: boolean;
  /** --log_target: "stdout", "stderr", a file path (appended, created 0600), or a stream (tests). Default stdout. */
  targets?: readonly (string | NodeJS.WritableStream)[];
}

function streamOf(target: string | NodeJS.WritableStream): NodeJS.WritableStream {
  if (typeof target !== 'string') return target;
  if (target === 'stdout') return process.stdout;
  if (target === 'stderr') return process.stderr;
  return fs.createWriteStream(target, { flags: 'a', mode: 0o600 });
}

export function winstonBackend(o: { json?: boolean; targets?: readonly (string | NodeJS.WritableStream)[]; scrub: (line: string) => string }): LogBackend {
  const render = o.json ? renderJson : renderText;
  const toLine = winston.format((info) => {
    const rec = (info as unknown as Record<symbol, LogRecord>)[RECORD];
    let line: string;
    try {
      line = o.scrub(render(rec));
    } catch {
      // render() does not throw; this is the last line of defence for the process.
      line = o.scrub(render({ level: rec.level, time: rec.time, scope: rec.scope, msg: 'log entry could not be rendered' }));
    }
    (info as unknown as Record<symbol, string>)[MESSAGE] = line;
    return info;
  });
  const streams = (o.targets ?? ['stdout']).map(streamOf);
  const logger = winston.createLogger({
    levels: { error: 0, warn: 1, info: 2, debug: 3 },
    // Levels are decided per scope before an entry gets here.
    level: 'debug',
    format: toLine(),
    transports: streams.map((stream) => new winston.transports.Stream({ stream, eol: '\n' })),
    exitOnError: false,
  });
  // A log target that fails (a closed pipe, a full disk) must not take the agent down.
  logger.on('error', () => undefined);
  for (const s of streams) s.on?.('error', () => undefined);
  return {
    write(rec) {
      try {
        logger.log({ level: rec.level, message: rec.msg, [RECORD]: rec } as unknown as winston.LogEntry);
      } catch {
        // Nothing a log call does may stop the caller.
      }
    },
    close: () =>
      new Promise<void>((resolve) => {
        logger.once('finish', () => resolve());
        logger.end();
      }),
  };
}

/** The agent's root logger (scope "default"); take scopes from it with withScope(). */
export function agentLogger(o: AgentLogOptions = {}): ScopedLogger {
  // The backend's scrubber needs the core's redactor and the core needs the backend: one late binding.
  // eslint-disable-next-line prefer-const -- assigned after the closure that reads it is made
  let core: LogCore | undefined;
  const backend = winstonBackend({ json: o.json, targets: o.targets, scrub: (l) => core!.redactor.scrub(l) });
  core = new LogCore(backend, o);
  return new ScopedLogger(core, 'default');
}
