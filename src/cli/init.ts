import type { Argv } from 'yargs';
import { CaptureApplyError } from '../capture/apply';
import { runInit } from '../init/run-init';
import { NetnsError, NftError } from '../netns/errors';
import { NetnsOpenError } from '../netns/handle';
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
    let code: number;
    try {
      code = await runInit(
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
    } catch (e) {
      // A --netns that names no network namespace is the caller's input, said as such (exit 2).
      if (e instanceof NetnsOpenError && netnsPath !== undefined) {
        throw new InputError(argv.netns !== undefined ? '--netns' : '--network-namespace', netnsPath, e.message);
      }
      // Rules or routes the kernel refused: nft's or netlink's own words, without a stack.
      if (e instanceof NftError || e instanceof CaptureApplyError || e instanceof NetnsError) {
        process.stderr.write(`istio-cni-ts init: ${e.message}\n`);
        process.exitCode = 1;
        return;
      }
      throw e;
    }
    process.exitCode = code;
  },
};
