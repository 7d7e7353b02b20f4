// Waiting on and stopping the node agent process of the containerd e2e tests: a wait fails at once,
// with the agent's last output, when the agent died meanwhile, instead of running into its timeout.
import * as assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { WatchedChild, stopChild } from '../../support/child-lines';

export interface E2eAgent extends WatchedChild {
  /** Set when the test stops it: its exit is expected from then on. */
  stopping?: boolean;
}

/** SIGTERM (SIGKILL after 10 s), its exit expected from now on; how it ended and how long it took. */
export function stopAgentProcess(ag: E2eAgent): ReturnType<typeof stopChild> {
  ag.stopping = true;
  return stopChild(ag);
}

/** `until` and `tail` for the agent `current()` returns (undefined before it was started). */
export function agentWaits(current: () => E2eAgent | undefined) {
  const tail = (n = 40) => {
    const agent = current();
    return agent ? `\n--- agent output (last ${n} lines) ---\n${agent.out.slice(-n).join('\n')}` : '';
  };
  /** Polls `f` until truthy; fails after `ms` naming what it waited for, at once if the agent died. */
  async function until<V>(what: string, f: () => V | undefined | false | null | Promise<V | undefined | false | null>, ms: number, every = 20): Promise<V> {
    const t0 = Date.now();
    for (;;) {
      const v = await f();
      if (v) return v;
      const agent = current();
      if (agent?.exit && !agent.stopping) assert.fail(`the agent exited (${JSON.stringify(agent.exit)}) while waiting for ${what}${tail()}`);
      if (Date.now() - t0 > ms) assert.fail(`timed out after ${ms} ms waiting for ${what}${tail()}`);
      await sleep(every);
    }
  }
  return { until, tail };
}
