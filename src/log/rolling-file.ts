// A small size-rotated log file with the behaviour of the lumberjack logger Istio's CNI plugin
// writes istio-cni.log with: when a write would take the file to its maximum size, the file is
// renamed to <name>-<UTC time>.log (time as 2006-01-02T15-04-05.000) and a new one is started;
// only the newest `backups` rotated files are kept, none older than `maxAgeMs`. New files are
// 0600. Writes are synchronous: the plugin is a short-lived process and writes a handful of
// lines. Several plugin processes may append at once (O_APPEND keeps lines whole); the size is
// read from the file before each write, so every process sees the others' lines.
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface RollingOptions {
  /** Rotate before a write that would reach this size (upstream: 10 MB). */
  readonly maxBytes: number;
  /** Rotated files kept (upstream: 1). */
  readonly backups: number;
  /** Rotated files older than this are removed (upstream: 2 days). */
  readonly maxAgeMs: number;
  readonly now?: () => Date;
}

export const ISTIO_ROLLING: RollingOptions = { maxBytes: 10 * 1024 * 1024, backups: 1, maxAgeMs: 2 * 24 * 3600 * 1000 };

const pad = (n: number, w = 2) => String(n).padStart(w, '0');

/** lumberjack's backup time format, in UTC. */
export function backupStamp(d: Date): string {
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}T${pad(d.getUTCHours())}-${pad(d.getUTCMinutes())}-${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3)}`;
}

const STAMP = /^(\d{4})-(\d{2})-(\d{2})T(\d{2})-(\d{2})-(\d{2})\.(\d{3})$/;

function parseStamp(s: string): Date | undefined {
  const m = STAMP.exec(s);
  if (!m) return undefined;
  const [y, mo, d, h, mi, se, ms] = m.slice(1).map(Number);
  const t = new Date(Date.UTC(y, mo - 1, d, h, mi, se, ms));
  return Number.isNaN(t.getTime()) ? undefined : t;
}

export class RollingFile {
  private fd: number | undefined;
  private readonly dir: string;
  private readonly prefix: string;
  private readonly ext: string;

  constructor(
    readonly file: string,
    private readonly opts: RollingOptions = ISTIO_ROLLING,
  ) {
    this.dir = path.dirname(file);
    this.ext = path.extname(file);
    this.prefix = `${path.basename(file, this.ext)}-`;
  }

  private now(): Date {
    return this.opts.now?.() ?? new Date();
  }

  /** The name a rotation at time `t` gives the current file. */
  backupName(t: Date): string {
    return path.join(this.dir, `${this.prefix}${backupStamp(t)}${this.ext}`);
  }

  /** Appends `text`; throws on I/O errors (the caller decides what a failing log file means). */
  write(text: string): void {
    const data = Buffer.from(text, 'utf8');
    if (data.length > this.opts.maxBytes) {
      throw new Error(`a log write of ${data.length} bytes is larger than the maximum file size ${this.opts.maxBytes}`);
    }
    if (this.fd === undefined) this.open();
    if (fs.fstatSync(this.fd!).size + data.length > this.opts.maxBytes) this.rotate(data.length);
    fs.writeSync(this.fd!, data);
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }

  private open(): void {
    this.fd = fs.openSync(this.file, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o600);
  }

  /**
   * Another process may have rotated already: the file at our path is then not the one we hold,
   * and if it has room we just switch to it.
   */
  private rotate(len: number): void {
    const held = fs.fstatSync(this.fd!, { bigint: true });
    let current: fs.BigIntStats | undefined;
    try {
      current = fs.statSync(this.file, { bigint: true });
    } catch {
      current = undefined;
    }
    this.close();
    const rotatedByOther = current === undefined || current.ino !== held.ino;
    if (!rotatedByOther || Number(current!.size) + len > this.opts.maxBytes) {
      try {
        fs.renameSync(this.file, this.backupName(this.now()));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
    this.open();
    this.prune();
  }

  /** Keeps the newest `backups` rotated files that are younger than maxAgeMs. */
  private prune(): void {
    const cutoff = this.now().getTime() - this.opts.maxAgeMs;
    const backups = fs
      .readdirSync(this.dir)
      .filter((n) => n.startsWith(this.prefix) && n.endsWith(this.ext))
      .map((n) => ({ n, t: parseStamp(n.slice(this.prefix.length, n.length - this.ext.length)) }))
      .filter((b): b is { n: string; t: Date } => b.t !== undefined)
      .sort((a, b) => b.t.getTime() - a.t.getTime());
    backups.forEach((b, i) => {
      if (i >= this.opts.backups || b.t.getTime() < cutoff) fs.rmSync(path.join(this.dir, b.n), { force: true });
    });
  }
}
