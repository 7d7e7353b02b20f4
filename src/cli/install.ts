// `istio-cni-ts install --once`: one install pass with the agent's configuration, then exit.
import type { Argv } from 'yargs';
import { parseAgentConfig, withAgentOptions } from '../agent/config';
import { agentLogger } from '../log/winston-backend';
import { InstallError, installOnce } from '../installer/installer';
import { AbortedError } from '../installer/watcher';

/** A failure reported as one line (main prints `stack` for errors it does not know). */
export class CommandFailure extends Error {
  constructor(message: string) {
    super(message);
    this.stack = message;
  }
}

export const installCommand = {
  command: 'install',
  describe: 'Install the plugin, its kubeconfig and the chained CNI config once (agent configuration)',
  builder: (y: Argv) =>
    withAgentOptions(y).option('once', { type: 'boolean', demandOption: true, describe: 'Run one install pass and exit' }).option('timeout', {
      type: 'string',
      describe: 'Give up after this many seconds (0 = wait for a primary CNI config forever)',
      defaultDescription: '"0"',
    }),
  handler: async (argv: Record<string, unknown>) => {
    const cfg = parseAgentConfig(argv, process.env);
    const timeout = Number(argv.timeout ?? 0);
    if (!Number.isFinite(timeout) || timeout < 0) throw new Error(`invalid --timeout ${JSON.stringify(argv.timeout)}`);
    // stdout carries the result: lines go to stderr unless --log_target says otherwise.
    const log = agentLogger({ ...cfg.logging, targets: argv.log_target === undefined ? ['stderr'] : cfg.logging.targets }).withScope('install-cni');
    const ac = new AbortController();
    const stop = () => ac.abort(new Error('terminated by signal'));
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    const timer = timeout > 0 ? setTimeout(() => ac.abort(new Error(`timed out after ${timeout}s`)), timeout * 1000) : undefined;
    try {
      const r = await installOnce(cfg.install, { log, signal: ac.signal });
      process.stdout.write(`${JSON.stringify(r)}\n`);
    } catch (e) {
      if (e instanceof InstallError) throw new CommandFailure(`install failed (${e.result}): ${e.message}`);
      if (e instanceof AbortedError) throw new CommandFailure(`install stopped: ${e.message}`);
      throw e;
    } finally {
      if (timer) clearTimeout(timer);
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
    }
  },
};
