// CNI mode of the executable: the runtime's environment and stdin in, handleCni, then exactly
// the result or error JSON on stdout. Logs go to stderr, istio-cni.log and the agent's log.sock
// (deps.log, src/log/), never to stdout.
import { Env } from '../cni/env';
import { handleCni } from './istio';
import { PluginDeps } from './ports';
import { realDeps } from './wiring';

/** Reads a stream to its end; for VERSION, whose stdin is optional, gives up after `idleMs`. */
export function readAll(stream: NodeJS.ReadableStream & { isTTY?: boolean }, idleMs?: number): Promise<string> {
  if (stream.isTTY) return Promise.resolve('');
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    const done = () => {
      if (timer) clearTimeout(timer);
      stream.removeAllListeners('data');
      resolve(Buffer.concat(chunks).toString('utf8'));
    };
    if (idleMs !== undefined) {
      timer = setTimeout(() => {
        stream.pause();
        done();
      }, idleMs);
      timer.unref();
    }
    stream.on('data', (c: Buffer | string) => chunks.push(typeof c === 'string' ? Buffer.from(c) : c));
    stream.on('end', done);
    stream.on('error', reject);
  });
}

export async function runCniProcess(
  env: Env = process.env,
  stdin: NodeJS.ReadableStream & { isTTY?: boolean } = process.stdin,
  stdout: NodeJS.WritableStream = process.stdout,
  deps: PluginDeps = realDeps(env),
): Promise<number> {
  const input = await readAll(stdin, env.CNI_COMMAND === 'VERSION' ? 1000 : undefined);
  const out = await handleCni(env, input, deps);
  if (out.stdout !== '') {
    await new Promise<void>((resolve) => stdout.write(out.stdout, () => resolve()));
  }
  // After the result, as upstream's deferred log.Sync: the log POST to the agent (one second at
  // most) must not hold back a result, and its failure changes nothing.
  await deps.log.flush?.();
  if (stdin === process.stdin) process.stdin.destroy();
  return out.exitCode;
}
