// A child process's output as lines and how it ended: the agent tests (and the soak) all watch the
// agent's log this way, so the line splitting and exit tracking live here once.
import { ChildProcess } from 'node:child_process';
import { Readable } from 'node:stream';

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Calls `onLine` with each complete line `stream` writes (without the newline). */
export function onLines(stream: Readable, onLine: (line: string) => void): void {
  let buf = '';
  stream.on('data', (c: Buffer | string) => {
    buf += c;
    const parts = buf.split('\n');
    buf = parts.pop()!;
    for (const l of parts) onLine(l);
  });
}

export interface WatchedChild {
  proc: ChildProcess;
  /** stdout and stderr lines in the order they came, stderr ones prefixed `STDERR `. */
  out: string[];
  /** Resolves when the child exited (code -1 when it could not be started: `SPAWN ERROR` in out). */
  exited: Promise<ExitStatus>;
  /** Set once it exited. */
  exit?: ExitStatus;
}

/** Collects the lines of a child spawned with stdout and stderr piped, and tracks its exit. */
export function watchChild(proc: ChildProcess): WatchedChild {
  const out: string[] = [];
  onLines(proc.stdout!, (l) => out.push(l));
  onLines(proc.stderr!, (l) => out.push(`STDERR ${l}`));
  const c: WatchedChild = {
    proc,
    out,
    exited: new Promise((r) => {
      proc.on('exit', (code, signal) => {
        c.exit = { code, signal };
        r(c.exit);
      });
      // Could not be started at all (no 'exit' follows).
      proc.on('error', (e) => {
        out.push(`SPAWN ERROR ${e.message}`);
        c.exit = { code: -1, signal: null };
        r(c.exit);
      });
    }),
  };
  return c;
}

/** SIGTERM (unless it already exited), SIGKILL after `graceMs`; how it ended and how long that took. */
export async function stopChild(c: WatchedChild, graceMs = 10_000): Promise<ExitStatus & { ms: number }> {
  const t0 = performance.now();
  if (!c.exit) c.proc.kill('SIGTERM');
  const t = setTimeout(() => c.proc.kill('SIGKILL'), graceMs);
  try {
    return { ...(await c.exited), ms: performance.now() - t0 };
  } finally {
    clearTimeout(t);
  }
}

/** Whether process `pid` still exists (signal 0). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
