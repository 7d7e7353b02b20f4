// The CNI_* environment variables (spec, section 2 "Parameters"), checked per command.
import { CniError, ErrorCode } from './errors';

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'GC' | 'VERSION';
export const COMMANDS: readonly CniCommand[] = ['ADD', 'DEL', 'CHECK', 'STATUS', 'GC', 'VERSION'];

export type Env = Readonly<Record<string, string | undefined>>;

export interface CniRequest {
  readonly command: CniCommand;
  readonly containerId: string;
  /** Empty when the runtime gave none (allowed for DEL: the netns is already gone). */
  readonly netns: string;
  readonly ifName: string;
  /** Raw CNI_ARGS; parsed by the plugin when it needs the pod's identity. */
  readonly args: string;
  readonly path: readonly string[];
}

// What each command requires, as the spec lists it ("Required environment parameters").
const REQUIRED: Record<CniCommand, readonly string[]> = {
  ADD: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'],
  CHECK: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'],
  DEL: ['CNI_CONTAINERID', 'CNI_IFNAME'],
  GC: ['CNI_PATH'],
  STATUS: [],
  VERSION: [],
};

/** Container IDs and network names: alphanumeric first, then alphanumerics, "_", "." or "-". */
export const CNI_NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

export function parseCommand(env: Env): CniCommand {
  const cmd = env.CNI_COMMAND ?? '';
  if (cmd === '') {
    throw new CniError(ErrorCode.InvalidEnvironment, 'required env variables [CNI_COMMAND] missing');
  }
  if (!(COMMANDS as readonly string[]).includes(cmd)) {
    throw new CniError(ErrorCode.InvalidEnvironment, `unknown CNI_COMMAND: ${JSON.stringify(cmd)}`, `CNI_COMMAND must be one of ${COMMANDS.join(', ')}`);
  }
  return cmd as CniCommand;
}

/** The kernel's rules for an interface name, as the spec states them. */
export function interfaceNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'is empty';
  if (Buffer.byteLength(name) > 15) return 'is longer than 15 bytes';
  if (name === '.' || name === '..') return 'is "." or ".."';
  if (/[/:\s]/u.test(name)) return 'contains "/", ":" or whitespace';
  return undefined;
}

export function parseCniEnv(env: Env, command: CniCommand): CniRequest {
  const get = (k: string) => env[k] ?? '';
  const missing = REQUIRED[command].filter((k) => get(k) === '');
  if (missing.length > 0) {
    throw new CniError(
      ErrorCode.InvalidEnvironment,
      `required env variables [${missing.join(',')}] missing`,
      `${command} needs ${REQUIRED[command].join(', ')}`,
    );
  }
  const containerId = get('CNI_CONTAINERID');
  if (REQUIRED[command].includes('CNI_CONTAINERID') && !CNI_NAME_RE.test(containerId)) {
    throw new CniError(
      ErrorCode.InvalidEnvironment,
      'invalid characters in CNI_CONTAINERID',
      `${JSON.stringify(containerId)}: must start with a letter or digit, then letters, digits, "_", "." or "-"`,
    );
  }
  const ifName = get('CNI_IFNAME');
  if (REQUIRED[command].includes('CNI_IFNAME')) {
    const problem = interfaceNameProblem(ifName);
    if (problem) throw new CniError(ErrorCode.InvalidEnvironment, `invalid CNI_IFNAME: interface name ${problem}`, JSON.stringify(ifName));
  }
  const path = get('CNI_PATH');
  return {
    command,
    containerId,
    netns: get('CNI_NETNS'),
    ifName,
    args: get('CNI_ARGS'),
    path: path === '' ? [] : path.split(':').filter((p) => p !== ''),
  };
}
