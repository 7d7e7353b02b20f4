// Layering of raw capture settings from their sources, lowest first: defaults, environment
// variables (Istio's BindEnv names), a --config JSON file, command-line flags. Each value
// remembers where it came from so an error can name the flag, key or variable.
import { InputError } from '../values/errors';
import { readJsonFile } from '../values/json-file';
import { CaptureConfig, checkKeys, parseCaptureConfig } from './config';
import { FIELDS, FieldDef, RawConfig } from './fields';
import { readResolvConf } from './resolv';

export interface Layer {
  /** How to name a key of this layer in an error. */
  readonly describe: (f: FieldDef) => string;
  readonly values: RawConfig;
}

export function envLayer(env: NodeJS.ProcessEnv): Layer {
  const values: RawConfig = {};
  const from: Record<string, string> = {};
  for (const f of FIELDS) {
    for (const name of f.env ?? []) {
      const v = env[name];
      if (v === undefined) continue;
      values[f.key] = envValue(f, name, v);
      from[f.key] = name;
    }
  }
  return { describe: (f) => `environment variable ${from[f.key]}`, values };
}

function envValue(f: FieldDef, name: string, v: string): string | boolean | number | string[] {
  if (f.kind === 'bool') {
    const t = v.trim().toLowerCase();
    if (t === 'true' || t === '1') return true;
    if (t === 'false' || t === '0' || t === '') return false;
    throw new InputError(`environment variable ${name}`, v, 'expected true or false');
  }
  return v;
}

export function configFileLayer(path: string): Layer {
  const obj = readJsonFile('--config', path);
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
    throw new InputError('--config', path, 'expected a JSON object of config keys');
  }
  const describe = (f: FieldDef | string) => `config key "${typeof f === 'string' ? f : f.key}" in ${path}`;
  checkKeys(obj as Record<string, unknown>, (k) => describe(k));
  return { describe, values: obj as RawConfig };
}

/** Flags given on the command line, by config key (yargs leaves absent ones undefined). */
export function flagLayer(argv: Record<string, unknown>): Layer {
  const values: RawConfig = {};
  for (const f of FIELDS) {
    if (!f.flag) continue;
    const v = argv[f.flag];
    if (v !== undefined) values[f.key] = v as string | boolean;
  }
  return { describe: (f) => `--${f.flag}`, values };
}

/**
 * Merge layers and parse. When DNS capture is on for specific servers and no layer named them,
 * the servers come from resolv.conf, as istio-iptables does.
 */
export function resolveCaptureConfig(layers: readonly Layer[], resolvConfPath = '/etc/resolv.conf'): CaptureConfig {
  const merged: RawConfig = {};
  const owner = new Map<string, Layer>();
  for (const layer of layers) {
    for (const [k, v] of Object.entries(layer.values)) {
      merged[k] = v;
      owner.set(k, layer);
    }
  }
  const source = (key: string) => {
    const f = FIELDS.find((x) => x.key === key);
    const layer = owner.get(key);
    return f && layer ? layer.describe(f) : f?.flag ? `--${f.flag}` : `config key "${key}"`;
  };
  const cfg = parseCaptureConfig(merged, source);
  const serversGiven = owner.has('dnsServersV4') || owner.has('dnsServersV6');
  if (cfg.redirectDNS && !cfg.captureAllDNS && !serversGiven) {
    const servers = readResolvConf(resolvConfPath);
    return parseCaptureConfig({ ...merged, dnsServersV4: servers.v4, dnsServersV6: servers.v6 }, (k) =>
      k.startsWith('dnsServers') ? `nameserver in ${resolvConfPath}` : source(k),
    );
  }
  return cfg;
}
