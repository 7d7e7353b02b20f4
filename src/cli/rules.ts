import type { Argv } from 'yargs';
import { buildCapture } from '../capture/build';
import { render } from '../nft/transaction';
import { captureConfigFromArgv, withCaptureOptions } from './capture-options';

export const rulesCommand = {
  command: 'rules',
  describe: 'Print the nftables transaction for a capture config (istio-init rules)',
  builder: (y: Argv) => withCaptureOptions(y),
  handler: (argv: Record<string, unknown>) => {
    process.stdout.write(render(buildCapture(captureConfigFromArgv(argv))));
  },
};
