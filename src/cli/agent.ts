// `istio-cni-ts agent`: the DaemonSet's long-running process. Configuration comes from Istio's
// install-cni environment variables, or flags of the same names (see `agent --help`).
import type { Argv } from 'yargs';
import { startAgent } from '../agent/agent';
import { parseAgentConfig, withAgentOptions } from '../agent/config';
import { ScopeLevels } from '../log/levels';
import { agentLogger } from '../log/winston-backend';

export const agentCommand = {
  command: 'agent',
  describe: 'Run the node agent: install the plugin and keep it installed; health, metrics, plugin logs',
  builder: (y: Argv) => withAgentOptions(y),
  handler: async (argv: Record<string, unknown>) => {
    const cfg = parseAgentConfig(argv, process.env);
    const log = agentLogger({ levels: new ScopeLevels(cfg.logLevel) }).withScope('cni-agent');
    const agent = await startAgent(cfg, {
      log,
      // Loaded only with AMBIENT_ENABLED: informers, ZDS and the netns code.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      ambient: (c, l, m) => (require('../agent/ambient') as typeof import('../agent/ambient')).ambientAgentPlugin(c, l, m),
    });
    await new Promise<void>((resolve) => {
      const onSignal = (sig: NodeJS.Signals) => {
        log.info(`received ${sig}, shutting down`);
        process.off('SIGTERM', onSignal);
        process.off('SIGINT', onSignal);
        agent.stop().then(resolve, (e) => {
          log.error(`shutdown failed: ${(e as Error).message}`);
          resolve();
        });
      };
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
    });
  },
};
