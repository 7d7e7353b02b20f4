// The flags Istio's install-cni takes besides its own parameters: pkg/log's (Options.
// AttachCobraFlags) and pkg/ctrlz's. As in Istio they are flags only, bound to no environment
// variable. The logging ones are honoured; ctrlz (Istio's introspection page) is accepted and
// not served. Every value is parsed here; a malformed one is an InputError naming the flag.
import type { Argv } from 'yargs';
import { ScopeLevels, Threshold, applyOutputLevels, parseScopeList } from '../log/levels';
import { InputError } from '../values/errors';

export interface LogOptions {
  /** --log_output_level over the starting default (AGENT_LOG_LEVEL). */
  levels: ScopeLevels;
  /** --log_as_json. */
  json: boolean;
  /** --log_caller. */
  callers: Set<string>;
  /** --log_stacktrace_level. */
  stackLevels: ScopeLevels;
  /** --log_target: stdout, stderr or file paths. */
  targets: string[];
  /** --ctrlz_port / --ctrlz_address: accepted, nothing listens. */
  ctrlz: { port: number; address: string };
}

interface Flag {
  name: string;
  def: string;
  describe: string;
  array?: boolean;
  honoured: boolean;
}

/** Istio 1.28.1's flags with their defaults (pkg/log DefaultOptions, pkg/ctrlz DefaultOptions). */
export const LOG_FLAGS: readonly Flag[] = [
  {
    name: 'log_output_level',
    def: '',
    honoured: true,
    describe:
      'Comma-separated minimum per-scope level: <scope>:<level>,... (a bare <level> is the default scope; `all` sets every scope). Scopes: default, cni-agent, cni-plugin, repair, pod-cache, ambient; levels: debug, info, warn, error, fatal, none',
  },
  { name: 'log_as_json', def: 'false', honoured: true, describe: 'Write JSON lines (time, level, scope, msg, then the fields) instead of text' },
  { name: 'log_caller', def: '', honoured: true, describe: 'Comma-separated scopes whose lines carry the caller (file:line); `all` for every scope' },
  {
    name: 'log_stacktrace_level',
    def: 'default:none',
    honoured: true,
    describe: 'Comma-separated minimum per-scope level at which a stack trace is added, as --log_output_level',
  },
  { name: 'log_target', def: 'stdout', array: true, honoured: true, describe: 'Where lines go: stdout, stderr or a file path (several: --log_target a b)' },
  { name: 'ctrlz_port', def: '9876', honoured: false, describe: "Istio's ControlZ introspection port (accepted; no ControlZ server here)" },
  { name: 'ctrlz_address', def: 'localhost', honoured: false, describe: "Istio's ControlZ listen address (accepted; no ControlZ server here)" },
];

const TRUE = new Set(['1', 't', 'T', 'TRUE', 'true', 'True']);
const FALSE = new Set(['0', 'f', 'F', 'FALSE', 'false', 'False']);

/** The flag's text as yargs hands it over (a bare boolean flag arrives as ""). */
function text(argv: Record<string, unknown>, f: Flag): string | undefined {
  const v = argv[f.name];
  if (v === undefined || v === null) return undefined;
  if (Array.isArray(v)) return v.length === 0 ? undefined : String(v[v.length - 1]);
  return String(v);
}

export function parseLogOptions(argv: Record<string, unknown>, startLevel: Threshold = 'info'): LogOptions {
  const get = (name: string) =>
    text(
      argv,
      LOG_FLAGS.find((f) => f.name === name)!,
    );

  const levels = new ScopeLevels(startLevel);
  const out = get('log_output_level');
  if (out !== undefined && out !== '') applyOutputLevels(levels, '--log_output_level', out);

  const jsonText = get('log_as_json');
  let json = false;
  if (jsonText !== undefined) {
    if (jsonText === '' || TRUE.has(jsonText)) json = true;
    else if (!FALSE.has(jsonText)) throw new InputError('--log_as_json', jsonText, 'expected true or false');
  }

  const stackLevels = new ScopeLevels('none');
  applyOutputLevels(stackLevels, '--log_stacktrace_level', get('log_stacktrace_level') || 'default:none');

  const rawTargets = argv.log_target;
  const targets = (Array.isArray(rawTargets) ? rawTargets.map(String) : rawTargets === undefined ? ['stdout'] : [String(rawTargets)]).filter((t) => t !== '');
  for (const t of targets) {
    if (t !== 'stdout' && t !== 'stderr' && !t.startsWith('/')) throw new InputError('--log_target', t, 'expected stdout, stderr or an absolute file path');
  }

  const portText = get('ctrlz_port') ?? '9876';
  if (!/^[0-9]{1,5}$/.test(portText) || Number(portText) > 65535) throw new InputError('--ctrlz_port', portText, 'expected a port 0-65535');

  return {
    levels,
    json,
    callers: parseScopeList('--log_caller', get('log_caller') ?? ''),
    stackLevels,
    targets: targets.length > 0 ? targets : ['stdout'],
    ctrlz: { port: Number(portText), address: get('ctrlz_address') ?? 'localhost' },
  };
}

export function withLogOptions<T>(y: Argv<T>): Argv<T> {
  let out = y;
  for (const f of LOG_FLAGS) {
    out = out.option(f.name, {
      type: 'string',
      ...(f.array ? { array: true } : {}),
      describe: f.describe,
      defaultDescription: JSON.stringify(f.def),
      group: f.honoured ? "Istio's logging options (flags only, as in Istio):" : 'Accepted for Istio compatibility, unused:',
    }) as Argv<T>;
  }
  return out;
}
