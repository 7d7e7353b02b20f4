// CNI mode of the executable: the runtime's environment and stdin in, handleCni, then exactly
// the result or error JSON on stdout. Logs go to stderr, istio-cni.log and the agent's log.sock
// (deps.log, src/log/), never to stdout.
//
// Stdio without Node's stream classes: process.stdin/stdout build net.Socket or fs streams on
// first use, and in the self-contained plugin compiling those modules at run time (they are not
// in its startup snapshot) cost more than all of the plugin's own work. The runtime hands us a
// pipe or a file that it has written in full and closed (ADD, DEL, CHECK, STATUS, GC), so a
// blocking read to EOF is what the stream would do. VERSION may come without stdin: only it
// takes process.stdin, with an idle timer.
import * as fs from 'node:fs';
import { Env } from '../cni/env';
import { CniOutput } from '../cni/skel';
import { PluginLogger } from '../log/plugin-logger';
import { handleCni } from './istio';
import { PluginDeps } from './ports';
import { realDeps } from './wiring';

/** How long VERSION waits for a stdin that may never come (the spec makes its config optional). */
const VERSION_STDIN_IDLE_MS = 1000;

const sleepMs = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/** Writes all of `text` to `fd` (a blocking or non-blocking pipe or file). */
export function writeFdSync(fd: number, text: string): void {
  const buf = Buffer.from(text, 'utf8');
  for (let off = 0; off < buf.length;) {
    try {
      off += fs.writeSync(fd, buf, off, buf.length - off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      sleepMs(1);
    }
  }
}

/** Stdin read to EOF, or undefined when it is a terminal (nothing to read). */
export function readFdSync(fd: number): string | undefined {
  // A terminal without node:tty (which loads net): a character device other than the memory
  // devices (/dev/null and friends, major 1).
  const st = fs.fstatSync(fd);
  if (st.isCharacterDevice() && Math.floor(st.rdev / 256) % 4096 !== 1) return undefined;
  const chunks: Buffer[] = [];
  const chunk = Buffer.allocUnsafe(65536);
  for (;;) {
    let n: number;
    try {
      n = fs.readSync(fd, chunk, 0, chunk.length, null);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN') {
        sleepMs(1);
        continue;
      }
      if (code === 'EOF' || code === 'EBADF') break;
      throw e;
    }
    if (n === 0) break;
    chunks.push(Buffer.from(chunk.subarray(0, n)));
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Reads a stream to its end; gives up after `idleMs` (VERSION's optional stdin). */
export function readAll(stream: NodeJS.ReadableStream & { isTTY?: boolean }, idleMs: number): Promise<string> {
  if (stream.isTTY) return Promise.resolve('');
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const done = () => {
      clearTimeout(timer);
      stream.removeAllListeners('data');
      resolve(Buffer.concat(chunks).toString('utf8'));
    };
    const timer = setTimeout(() => {
      stream.pause();
      done();
    }, idleMs);
    timer.unref();
    stream.on('data', (c: Buffer | string) => chunks.push(typeof c === 'string' ? Buffer.from(c) : c));
    stream.on('end', done);
    stream.on('error', reject);
  });
}

/** The process' stdin as text: read to EOF, except VERSION's, which may never come. */
async function readStdinText(env: Env): Promise<string> {
  if (env.CNI_COMMAND !== 'VERSION') return readFdSync(0) ?? '';
  try {
    return await readAll(process.stdin, VERSION_STDIN_IDLE_MS);
  } finally {
    process.stdin.destroy();
  }
}

/** One CNI request as data: the runtime's env and stdin text in, stdout text and exit code out. */
export function runCniProcess(env: Env, stdinText: string, deps: PluginDeps = realDeps(env)): Promise<CniOutput> {
  return handleCni(env, stdinText, deps);
}

/**
 * The process entry: stdin read, runCniProcess, its stdout written; resolves to the exit code.
 * The log flush comes after the result, as upstream's deferred log.Sync: the POST to the agent
 * (one second at most) must not hold back a result, and its failure changes nothing.
 */
export async function cniMain(env: Env = process.env, deps?: PluginDeps): Promise<number> {
  const stdinText = await readStdinText(env);
  const d = deps ?? realDeps(env, new PluginLogger({ stderr: (line) => writeFdSync(2, line) }));
  const out = await runCniProcess(env, stdinText, d);
  writeFdSync(1, out.stdout);
  await d.log.flush?.();
  return out.exitCode;
}
