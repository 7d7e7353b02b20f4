// The entry of the self-contained plugin executable (the payload's istio-cni-ts/istio-cni-plugin,
// docs/payload.md). install/package.js bundles this file with esbuild and builds a Node single
// executable application from it, with a V8 startup snapshot: everything this module imports
// (CNI protocol, config parsing, pod -> rules, the logger) is evaluated at build time and lives
// in the snapshot; at run time only the deserialize main below runs. What cannot be in a
// snapshot is loaded on first use at run time: the native addon and netlink's binding (from the
// executable's own directory), and node's http/https (their parser handles cannot be
// serialised; the bundle reaches them through a lazy proxy).
//
// Nothing here is needed by `node bin/istio-cni-ts.js` in CNI mode: src/main.ts goes straight to
// ./process, as this file does.
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PluginLogger } from '../log/plugin-logger';
import { useAddonAt } from '../netns/addon';
import { realDeps } from './wiring';
import { runCniProcess } from './process';

/** The names of the native files beside the executable in the payload. */
export const PAYLOAD_ADDON = 'nftables_napi.node';
export const PAYLOAD_NETLINK = 'netlink.node';

/**
 * Where the payload's native files are: beside the executable, or beside the bundle when node
 * runs it. The shim starts the executable through the payload's own loader
 * (`istio-cni-ts/lib/ld-linux-*`), which is then what `process.execPath` names: its parent is the
 * payload directory.
 */
function nativeDir(): string {
  if (!isSea()) return __dirname;
  const dir = path.dirname(process.execPath);
  return path.basename(process.execPath).startsWith('ld-linux') && path.basename(dir) === 'lib' ? path.dirname(dir) : dir;
}

function isSea(): boolean {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return (require('node:sea') as { isSea(): boolean }).isSea();
  } catch {
    return false;
  }
}

// Stdio without Node's stream classes: process.stdin/stdout/stderr build net.Socket or fs
// streams on first use, and compiling those modules at run time (they are not in the snapshot)
// cost the plugin more than all of its own work. The runtime hands us a pipe or a file that it
// has written in full and closed (ADD, DEL, CHECK, STATUS, GC), so blocking reads to EOF are what
// the stream would do. VERSION may come without stdin: it keeps process.stdin and its idle timer.

const sleepMs = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/** Writes all of `text` to `fd` (a blocking or non-blocking pipe or file). */
export function writeFdSync(fd: number, text: string): void {
  const buf = Buffer.from(text, 'utf8');
  for (let off = 0; off < buf.length; ) {
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

/** A readable that hands runCniProcess text already read (its readAll listens for data and end). */
function textStream(text: string): NodeJS.ReadableStream {
  const e = new EventEmitter() as EventEmitter & { pause(): void };
  e.pause = () => undefined;
  e.on('newListener', (event: string) => {
    if (event === 'end') {
      setImmediate(() => {
        if (text !== '') e.emit('data', Buffer.from(text, 'utf8'));
        e.emit('end');
      });
    }
  });
  return e as unknown as NodeJS.ReadableStream;
}

const fdStdout = { write: (chunk: string, cb?: () => void) => (writeFdSync(1, chunk), cb?.(), true) } as unknown as NodeJS.WritableStream;

/** Runs one CNI request on this process' env and stdin, then ends the process with its code. */
export function runStandalone(): void {
  const dir = nativeDir();
  useAddonAt(path.join(dir, PAYLOAD_ADDON));
  (globalThis as { __ictsNetlinkBinding?: string }).__ictsNetlinkBinding = path.join(dir, PAYLOAD_NETLINK);
  const env = process.env;
  let run: Promise<number>;
  if (env.CNI_COMMAND === 'VERSION') {
    run = runCniProcess(env);
  } else {
    const text = readFdSync(0);
    const deps = realDeps(env, new PluginLogger({ stderr: (line) => writeFdSync(2, line) }));
    run = runCniProcess(env, text === undefined ? process.stdin : textStream(text), fdStdout, deps);
  }
  run.then(
    (code) => process.exit(code),
    (e: unknown) => {
      // runCniProcess turns every plugin failure into a CNI error result; reaching this is a bug
      // (e.g. stdout closed). Still say so on stderr and fail.
      process.stderr.write(`istio-cni-ts: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}

/**
 * The bundle's entry (install/package.js). While the SEA's snapshot is being built it only
 * registers runStandalone as the deserialize main; otherwise (the bundle run by node) it runs.
 */
export function main(): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const v8 = require('node:v8') as typeof import('node:v8');
  const snap = v8.startupSnapshot;
  if (snap?.isBuildingSnapshot()) {
    // What ADD and DEL load on first use, evaluated now so that it is part of the snapshot: the
    // nft wrapper, the rtnetlink code (dual-stack check, routes; netlink's binding itself is only
    // opened at run time) and fs.promises. Measured: DEL about 60 ms of CPU cheaper, VERSION
    // and ADD a few ms dearer for the larger snapshot (docs/payload.md).
    /* eslint-disable @typescript-eslint/no-require-imports */
    require('../netns/nft');
    require('../netns/dualstack');
    require('../netns/tproxy-routes');
    void fs.promises;
    /* eslint-enable @typescript-eslint/no-require-imports */
    snap.setDeserializeMainFunction(runStandalone);
  } else {
    runStandalone();
  }
}
