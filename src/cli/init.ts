import type { Argv } from 'yargs';
import { runInit } from '../init/run-init';
import { InputError } from '../values/errors';
import { captureConfigFromArgv, withCaptureOptions } from './capture-options';

export const initCommand = {
  command: 'init',
  describe: 'Apply the istio-init capture rules (nftables) in the current netns or --netns PATH',
  builder: (y: Argv) =>
    withCaptureOptions(y)
      .option('netns', { type: 'string', describe: 'Network namespace path to apply in (default: the current one)' })
      .option('cleanup', { type: 'boolean', describe: 'Remove our tables and TPROXY routes instead of applying' }),
  handler: async (argv: Record<string, unknown>) => {
    const cfg = captureConfigFromArgv(argv);
    const netnsPath = (argv.netns as string | undefined) ?? (cfg.networkNamespace || undefined);
    if (netnsPath !== undefined && cfg.runValidation) {
      throw new InputError(
        '--run-validation',
        'true',
        'validation checks the current network namespace; run it inside the pod (e.g. nsenter --net=PATH istio-cni-ts init --run-validation)',
      );
    }
    const code = await runInit(
      cfg,
      {
        netnsPath,
        cleanup: argv.cleanup === true,
        ipv6Override: argv.ipv6 as boolean | undefined,
      },
      {
        out: (t) => process.stdout.write(t),
        log: (l) => process.stderr.write(`istio-cni-ts init: ${l}\n`),
      },
    );
    process.exitCode = code;
  },
};
