// `istio-cni-ts agent` and `install-cni` (the name Istio's chart runs): the DaemonSet's
// long-running process. Configuration comes from Istio's install-cni environment variables or
// flags of the same names, plus Istio's logging flags (see `agent --help`).
import type { Argv } from 'yargs';
import { startAgent } from '../agent/agent';
import { parseAgentConfig, withAgentOptions } from '../agent/config';
import { agentLogger } from '../log/winston-backend';
import { buildInfo, versionString } from '../version';

export const agentCommand = {
  command: 'agent',
  describe: 'Run the node agent: install the plugin and keep it installed; health, metrics, plugin logs',
  builder: (y: Argv) => withAgentOptions(y),
  handler: (argv: Record<string, unknown>) => runAgent(argv),
};

export async function runAgent(argv: Record<string, unknown>): Promise<void> {
  const cfg = parseAgentConfig(argv, process.env);
  const log = agentLogger(cfg.logging).withScope('cni-agent');
  // As Istio's install-cni starts: who we are, then how we log.
  log.info(`CNI version: ${versionString(buildInfo())}`, { node: process.version });
  log.info(`CNI logging level: ${cfg.logging.levels.of('cni-agent')}`, { levels: cfg.logging.levels.describe(), json: cfg.logging.json });
  if (cfg.logging.ctrlz.port !== 9876 || cfg.logging.ctrlz.address !== 'localhost') {
    log.info('--ctrlz_port/--ctrlz_address are accepted for compatibility; this agent serves no ControlZ page');
  }
  const agent = await startAgent(cfg, {
    log,
    // Loaded only with AMBIENT_ENABLED: informers, ZDS and the netns code.
    ambient: async (c, l, m, pods) => (await import('../agent/ambient')).ambientAgentPlugin(c, l, m, pods),
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
}
