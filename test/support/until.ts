// The one polling wait of the tests: for a condition another process, a timer or the kernel
// makes true some time later.
import * as assert from 'node:assert/strict';

type Maybe<T> = T | undefined | null | false;

/** What a wait on another process watches besides its condition. */
export interface UntilWatch {
  /** A reason to stop waiting at once (the process it waits on died), checked after each poll. */
  readonly abort?: () => Maybe<string> | Promise<Maybe<string>>;
  /** Appended to the failure (e.g. that process' last output). */
  readonly detail?: () => string;
}

/**
 * Polls `f` every `stepMs` until it gives a truthy value, and returns that value; fails the test
 * naming `what` once `ms` have passed, or at once when `watch.abort` gives a reason.
 */
export async function until<T>(what: string, f: () => Maybe<T> | Promise<Maybe<T>>, ms = 5000, stepMs = 20, watch: UntilWatch = {}): Promise<T> {
  const start = Date.now();
  const detail = () => watch.detail?.() ?? '';
  for (;;) {
    const v = await f();
    if (v) return v;
    const stop = await watch.abort?.();
    if (stop) assert.fail(`${stop} while waiting for ${what}${detail()}`);
    if (Date.now() - start > ms) assert.fail(`timed out after ${ms} ms waiting for ${what}${detail()}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
