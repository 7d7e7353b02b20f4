// The one polling wait of the tests: for a condition another process, a timer or the kernel
// makes true some time later.
import * as assert from 'node:assert/strict';

type Maybe<T> = T | undefined | null | false;

/**
 * Polls `f` every `stepMs` until it gives a truthy value, and returns that value; fails the test
 * naming `what` once `ms` have passed.
 */
export async function until<T>(what: string, f: () => Maybe<T> | Promise<Maybe<T>>, ms = 5000, stepMs = 20): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() - start > ms) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
