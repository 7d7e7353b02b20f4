// The CNI execution protocol, separate from what the plugin decides: read the command and the
// CNI_* variables, decode and version-check the network config, call one plugin function, and
// turn its answer or its error into exactly what goes to stdout and the exit code. Nothing here
// writes to a stream or exits, so the same code can run inside a long-lived process.
import { CniError, ErrorCode, errorResult } from './errors';
import { CniCommand, CniRequest, Env, parseCommand, parseCniEnv } from './env';
import { JsonObject, field, isObject, jsonType } from './json';
import { NetConf, configVersion, decodeStdin, parseNetConf, requireSupportedVersion } from './netconf';
import { CniVersion, LATEST_VERSION, SUPPORTED_VERSIONS, compareVersions, isSupportedVersion, parseSemver } from './version';

export interface GcAttachment {
  readonly containerId: string;
  readonly ifName: string;
}

/** What a plugin implements; each function gets the checked request and config. */
export interface CniPlugin {
  /** ADD: returns the result to print (a chained plugin passes prevResult through). */
  add(req: CniRequest, conf: NetConf): Promise<JsonObject>;
  del(req: CniRequest, conf: NetConf): Promise<void>;
  check(req: CniRequest, conf: NetConf): Promise<void>;
  /** Throw a CniError with code 50 when ADD cannot be serviced. */
  status(req: CniRequest, conf: NetConf): Promise<void>;
  gc(req: CniRequest, conf: NetConf, valid: readonly GcAttachment[]): Promise<void>;
  /** Turns an error the plugin threw that is not a CniError into one (the plugin's own code). */
  classify(e: unknown): CniError;
  /** Told about every error result before it is printed (for logging). */
  onError?(e: CniError, command: CniCommand | undefined): void;
}

export interface CniOutput {
  /** Exactly what goes to stdout: a JSON document and "\n", or "" for commands without output. */
  readonly stdout: string;
  readonly exitCode: number;
}

/** The oldest config version that may use each command. */
const MIN_VERSION: Partial<Record<CniCommand, string>> = { CHECK: '0.4.0', GC: '1.1.0', STATUS: '1.1.0' };

const print = (doc: unknown): string => `${JSON.stringify(doc)}\n`;

export function versionResult(stdin: string): JsonObject {
  // The answer carries the version the caller asked in; without a usable one, our newest.
  let asked: unknown;
  try {
    const obj = JSON.parse(stdin) as unknown;
    if (isObject(obj)) asked = field(obj, 'cniVersion');
  } catch {
    asked = undefined;
  }
  return { cniVersion: isSupportedVersion(asked) ? asked : LATEST_VERSION, supportedVersions: [...SUPPORTED_VERSIONS] };
}

export async function dispatchCni(env: Env, stdin: string, plugin: CniPlugin): Promise<CniOutput> {
  let command: CniCommand | undefined;
  let version: CniVersion = LATEST_VERSION;
  try {
    command = parseCommand(env);
    if (command === 'VERSION') return { stdout: print(versionResult(stdin)), exitCode: 0 };
    const req = parseCniEnv(env, command);
    const obj = decodeStdin(stdin);
    const asked = configVersion(obj);
    if (isSupportedVersion(asked)) version = asked;
    const conf = checkConfig(obj, asked, command);
    switch (command) {
      case 'ADD':
        return { stdout: print(await plugin.add(req, conf)), exitCode: 0 };
      case 'DEL':
        await plugin.del(req, conf);
        break;
      case 'CHECK':
        await plugin.check(req, conf);
        break;
      case 'STATUS':
        await plugin.status(req, conf);
        break;
      case 'GC':
        await plugin.gc(req, conf, validAttachments(conf.raw));
        break;
    }
    return { stdout: '', exitCode: 0 };
  } catch (e) {
    const err = e instanceof CniError ? e : plugin.classify(e);
    plugin.onError?.(err, command);
    return { stdout: print(errorResult(version, err)), exitCode: 1 };
  }
}

function checkConfig(obj: JsonObject, asked: string, command: CniCommand): NetConf {
  if (!parseSemver(asked)) {
    throw new CniError(ErrorCode.DecodingFailure, 'error decoding cniVersion', `${JSON.stringify(asked)} is not a version (x.y.z)`);
  }
  const min = MIN_VERSION[command];
  if (min && compareVersions(asked, min) < 0) {
    throw new CniError(
      ErrorCode.IncompatibleVersion,
      `config version does not allow ${command}`,
      `${command} needs cniVersion ${min} or later, config is ${asked}`,
    );
  }
  return parseNetConf(obj, requireSupportedVersion(asked));
}

function validAttachments(obj: JsonObject): GcAttachment[] {
  const v = field(obj, 'cni.dev/valid-attachments');
  if (v === undefined) return [];
  const bad = (why: string) => new CniError(ErrorCode.InvalidConfig, 'invalid cni.dev/valid-attachments', why);
  if (!Array.isArray(v)) throw bad(`expected an array, got ${jsonType(v)}`);
  return v.map((a, i) => {
    if (!isObject(a)) throw bad(`item ${i}: expected an object`);
    const containerId = field(a, 'containerID');
    const ifName = field(a, 'ifname');
    if (typeof containerId !== 'string' || typeof ifName !== 'string') {
      throw bad(`item ${i}: expected string containerID and ifname`);
    }
    return { containerId, ifName };
  });
}
