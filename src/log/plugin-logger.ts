// The CNI plugin's logger. Each entry is one JSON line (format.ts) written to
//   - stderr, at plugin_log_level (stdout belongs to the CNI result);
//   - <cni_agent_run_dir>/istio-cni.log, rotated at 10 MB with one backup, at plugin_log_level
//     but never below info (Istio's rolling log is an info-level core), when that directory
//     exists (the node agent creates it; the plugin does not create directories on the host);
//   - the node agent, when <cni_agent_run_dir>/log.sock exists: lines at plugin_log_level are
//     kept and POSTed once by flush(), at the end of the run (Istio's udsCore + log.Sync).
// Until the network config is read (configure()), entries go to stderr at info and are kept;
// configure() then hands the kept ones to the file and the agent as well.
//
// Not winston (the agent's backend): requiring winston 3 costs ~60 ms on this machine, a third
// of the plugin's whole run (README, "Logging"), and the plugin runs once per pod start. These
// three sinks are a few dozen lines, and the lines are format.ts's, as the agent's are.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LogFields, encodeEntry } from './format';
import { LogLevel, Threshold, passes } from './levels';
import { PluginRunLogger } from './logger';
import { Redactor } from './redact';
import { ISTIO_ROLLING, RollingFile, RollingOptions } from './rolling-file';
import { LOG_SOCKET, postLogLines } from './uds';

export const LOCAL_LOG_NAME = 'istio-cni.log';

export interface PluginLoggerOptions {
  readonly stderr?: (line: string) => void;
  readonly now?: () => Date;
  readonly rolling?: RollingOptions;
  readonly postTimeoutMs?: number;
}

interface Kept {
  readonly level: LogLevel;
  readonly line: string;
}

export class PluginLogger implements PluginRunLogger {
  private level: Threshold = 'info';
  private configuredDir: string | undefined;
  private kept: Kept[] | undefined = [];
  private file: RollingFile | undefined;
  private udsSocket: string | undefined;
  private udsLines: string[] = [];
  private readonly redactor = new Redactor();
  private readonly writeStderr: (line: string) => void;

  constructor(private readonly opts: PluginLoggerOptions = {}) {
    this.writeStderr = opts.stderr ?? ((l) => process.stderr.write(l));
  }

  readonly debug = (msg: string, fields?: LogFields) => this.log('debug', msg, fields);
  readonly info = (msg: string, fields?: LogFields) => this.log('info', msg, fields);
  readonly warn = (msg: string, fields?: LogFields) => this.log('warn', msg, fields);
  readonly error = (msg: string, fields?: LogFields) => this.log('error', msg, fields);

  /** Never log this text (a bearer token): it is replaced by "[redacted]" wherever it appears. */
  redact(secret: string | undefined): void {
    this.redactor.add(secret);
  }

  /** plugin_log_level and cni_agent_run_dir, once the network config is read. */
  configure(c: { level: Threshold; agentRunDir: string }): void {
    this.level = c.level;
    if (this.configuredDir === c.agentRunDir) return;
    this.configuredDir = c.agentRunDir;
    this.file?.close();
    this.file = undefined;
    this.udsSocket = undefined;
    let isDir = false;
    try {
      isDir = fs.statSync(c.agentRunDir).isDirectory();
    } catch {
      isDir = false;
    }
    if (isDir) {
      this.file = new RollingFile(path.join(c.agentRunDir, LOCAL_LOG_NAME), this.opts.rolling ?? ISTIO_ROLLING);
      const sock = path.join(c.agentRunDir, LOG_SOCKET);
      if (fs.existsSync(sock)) this.udsSocket = sock;
    }
    const kept = this.kept ?? [];
    this.kept = undefined;
    for (const k of kept) this.toFileAndAgent(k.level, k.line);
  }

  private enabled(level: LogLevel, floor: Threshold = 'debug'): boolean {
    return passes(level, this.level) && passes(level, floor);
  }

  private log(level: LogLevel, msg: string, fields?: LogFields): void {
    const line = this.redactor.scrub(encodeEntry(level, this.opts.now?.() ?? new Date(), msg, fields));
    if (this.enabled(level)) this.writeStderr(`${line}\n`);
    if (this.kept) this.kept.push({ level, line });
    else this.toFileAndAgent(level, line);
  }

  private toFileAndAgent(level: LogLevel, line: string): void {
    if (this.file && this.enabled(level, 'info')) {
      try {
        this.file.write(`${line}\n`);
      } catch (e) {
        const file = this.file.file;
        this.file.close();
        this.file = undefined;
        this.writeStderr(
          `${encodeEntry('warn', new Date(), 'cannot write the local log file; continuing without it', { file, error: (e as Error).message })}\n`,
        );
      }
    }
    if (this.udsSocket && this.enabled(level)) this.udsLines.push(`${line}\n`);
  }

  /**
   * Sends the kept lines to the agent (at most one POST, one second), closes the file. Resolves
   * with the delivery error, if any, for tests; the plugin ignores it, as upstream does.
   */
  async flush(): Promise<Error | undefined> {
    this.file?.close();
    this.file = undefined;
    const lines = this.udsLines.map((l) => this.redactor.scrub(l));
    this.udsLines = [];
    if (!this.udsSocket || lines.length === 0) return undefined;
    return postLogLines(this.udsSocket, lines, this.opts.postTimeoutMs);
  }
}
