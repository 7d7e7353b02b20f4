// The istio-iptables / istio-init flags, registered on a yargs command from the field table.
import type { Argv } from 'yargs';
import { CaptureConfig } from '../capture/config';
import { FIELDS } from '../capture/fields';
import { Layer, configFileLayer, envLayer, flagLayer, resolveCaptureConfig } from '../capture/sources';

export function withCaptureOptions<T>(y: Argv<T>): Argv<T> {
  let out = y;
  for (const f of FIELDS) {
    if (!f.flag) continue;
    const env = f.env && f.env.length ? ` [env: ${f.env.join(', ')}]` : '';
    out = out.option(f.flag, {
      alias: f.short,
      type: f.kind === 'bool' ? 'boolean' : 'string',
      describe: `${f.describe} [default: ${JSON.stringify(f.default === 5_000_000_000 ? '5s' : f.default)}]${env}`,
      group: 'istio-iptables flags:',
    });
  }
  return out
    .option('config', {
      type: 'string',
      describe: 'JSON file whose keys are the config field names (proxyPort, inboundPortsInclude, enableIPv6, ...); flags override it',
    })
    .option('ipv6', {
      type: 'boolean',
      describe: 'Emit IPv6 rules too (sets enableIPv6; `init` detects it from the pod instead)',
    });
}

/** Build the typed config from defaults, environment, --config file and flags (in that order). */
export function captureConfigFromArgv(argv: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): CaptureConfig {
  const layers: Layer[] = [envLayer(env)];
  if (typeof argv.config === 'string') layers.push(configFileLayer(argv.config));
  const flags = flagLayer(argv);
  if (argv.ipv6 !== undefined) flags.values.enableIPv6 = argv.ipv6 as boolean;
  layers.push({ describe: (f) => (f.key === 'enableIPv6' ? '--ipv6' : flags.describe(f)), values: flags.values });
  return resolveCaptureConfig(layers);
}
