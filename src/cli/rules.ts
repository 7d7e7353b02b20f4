import type { Argv } from 'yargs';
import { buildAmbientRules } from '../ambient/build';
import { readAmbientRulesFile } from '../ambient/source';
import { buildCapture } from '../capture/build';
import { FIELDS } from '../capture/fields';
import { render } from '../nft/transaction';
import { InputError } from '../values/errors';
import { captureConfigFromArgv, withCaptureOptions } from './capture-options';
import { runPodDryRun, withPodOptions } from './pod-dryrun';

export const rulesCommand = {
  command: 'rules',
  describe: 'Print the nftables transaction for a capture config (istio-init rules), for a pod as the CNI plugin sees it, or ambient in-pod/host rules',
  builder: (y: Argv) =>
    withPodOptions(withCaptureOptions(y)).option('ambient', {
      type: 'string',
      describe:
        'Print ambient rules instead: "pod" (in-pod redirection to ztunnel) or "host" (kubelet probe SNAT). ' +
        'Settings come from --config only: a JSON object of AmbientConfig keys (enableIPv6, redirectDNS, ' +
        'hostProbeSNATAddress, ...) plus virtualInterfaces, ingressMode, dnsProxy (pod) or kubeletUID, probeIPSetName (host)',
    }),
  handler: async (argv: Record<string, unknown>) => {
    if (
      await runPodDryRun(
        argv,
        (t) => process.stdout.write(t),
        (t) => process.stderr.write(t),
      )
    )
      return;
    if (argv.ambient === undefined) {
      process.stdout.write(render(buildCapture(captureConfigFromArgv(argv))));
      return;
    }
    // Checked here rather than by yargs so the error is one line naming the flag and value.
    if (argv.ambient !== 'pod' && argv.ambient !== 'host') throw new InputError('--ambient', argv.ambient, 'expected pod or host');
    if (typeof argv.config !== 'string') throw new InputError('--ambient', argv.ambient, 'needs --config FILE');
    const captureFlags = FIELDS.filter((f) => f.flag && f.flag !== 'dry-run' && argv[f.flag] !== undefined).map((f) => `--${f.flag}`);
    if (argv.ipv6 !== undefined) captureFlags.push('--ipv6');
    if (captureFlags.length > 0) {
      throw new InputError('--ambient', argv.ambient, `takes its settings from --config only; not ${captureFlags.join(', ')}`);
    }
    process.stdout.write(render(buildAmbientRules(readAmbientRulesFile(argv.ambient, argv.config))));
  },
};
