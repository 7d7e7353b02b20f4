// Waiting on and stopping the node agent process of the containerd e2e tests: a wait fails at once,
// with the agent's last output, when the agent died meanwhile, instead of running into its timeout.
import { WatchedChild, stopChild } from '../../support/child-lines';
import { until as untilOrFail } from '../../support/until';

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
  const until = <V>(what: string, f: () => V | undefined | false | null | Promise<V | undefined | false | null>, ms: number, every = 20): Promise<V> =>
    untilOrFail(what, f, ms, every, {
      abort: () => {
        const agent = current();
        return agent?.exit && !agent.stopping ? `the agent exited (${JSON.stringify(agent.exit)})` : undefined;
      },
      detail: () => tail(),
    });
  return { until, tail };
}
