// The network configuration on stdin (spec, section 1) and the chained plugin's prevResult
// (section 5), parsed into typed values.
import { parsePrefix, parseIp } from '../net/ip';
import { CniError, ErrorCode } from './errors';
import { JsonObject, field, isObject, jsonType, withoutField } from './json';
import { CNI_NAME_RE } from './env';
import { CniVersion, isSupportedVersion, parseSemver, SUPPORTED_VERSIONS } from './version';

export interface PrevResultIp {
  /** CIDR as written, e.g. "10.0.0.2/24" (validated). */
  readonly address: string;
  readonly gateway?: string;
  /** Index into `interfaces`. */
  readonly interface?: number;
}

export interface PrevResult {
  /** The object as given; ADD passes it through unchanged. */
  readonly raw: JsonObject;
  readonly interfaces: readonly { readonly name: string; readonly sandbox?: string }[];
  readonly ips: readonly PrevResultIp[];
}

export interface NetConf {
  readonly cniVersion: CniVersion;
  readonly name: string;
  readonly type: string;
  readonly prevResult?: PrevResult;
  /** The whole decoded object, for the plugin's own keys. */
  readonly raw: JsonObject;
}

/** Stdin as a JSON object, or code 6. */
export function decodeStdin(stdin: string): JsonObject {
  let v: unknown;
  try {
    v = JSON.parse(stdin);
  } catch (e) {
    throw new CniError(ErrorCode.DecodingFailure, 'error decoding network config from stdin', (e as Error).message);
  }
  if (!isObject(v)) {
    throw new CniError(ErrorCode.DecodingFailure, 'error decoding network config from stdin', `expected a JSON object, got ${jsonType(v)}`);
  }
  return v;
}

/**
 * The config's cniVersion as written ("0.1.0" when absent, as libcni reads it). Code 6 when it is
 * not a string; whether it is supported is the caller's check.
 */
export function configVersion(obj: JsonObject): string {
  const v = field(obj, 'cniVersion');
  if (v === undefined || v === '') return '0.1.0';
  if (typeof v !== 'string') {
    throw new CniError(ErrorCode.DecodingFailure, 'error decoding cniVersion', `expected a string, got ${jsonType(v)}`);
  }
  return v;
}

export function requireSupportedVersion(version: string): CniVersion {
  if (isSupportedVersion(version)) return version;
  const why = parseSemver(version) ? 'not supported' : 'not a version';
  throw new CniError(
    ErrorCode.IncompatibleVersion,
    'incompatible CNI versions',
    `config is ${JSON.stringify(version)} (${why}), plugin supports [${SUPPORTED_VERSIONS.join(' ')}]`,
  );
}

export function parseNetConf(obj: JsonObject, version: CniVersion): NetConf {
  const name = field(obj, 'name');
  if (name === undefined || name === '') {
    throw new CniError(ErrorCode.InvalidConfig, 'missing network name', 'the network config has no "name"');
  }
  if (typeof name !== 'string') {
    throw new CniError(ErrorCode.InvalidConfig, 'invalid network name', `expected a string, got ${jsonType(name)}`);
  }
  if (!CNI_NAME_RE.test(name)) {
    throw new CniError(ErrorCode.InvalidConfig, 'invalid characters found in network name', JSON.stringify(name));
  }
  const type = field(obj, 'type') ?? '';
  if (typeof type !== 'string') {
    throw new CniError(ErrorCode.InvalidConfig, 'invalid plugin type', `expected a string, got ${jsonType(type)}`);
  }
  const prev = field(obj, 'prevResult');
  return {
    cniVersion: version,
    name,
    type,
    ...(prev !== undefined ? { prevResult: parsePrevResult(prev) } : {}),
    raw: obj,
  };
}

function badPrev(where: string, why: string): CniError {
  return new CniError(ErrorCode.InvalidConfig, 'could not parse prevResult', `${where}: ${why}`);
}

/** The parts of a prevResult this plugin reads, checked; the object itself is kept as given. */
export function parsePrevResult(v: unknown): PrevResult {
  if (!isObject(v)) throw badPrev('prevResult', `expected an object, got ${jsonType(v)}`);
  const list = (key: string): unknown[] => {
    const x = field(v, key);
    if (x === undefined) return [];
    if (!Array.isArray(x)) throw badPrev(`prevResult.${key}`, `expected an array, got ${jsonType(x)}`);
    return x;
  };
  const optString = (o: JsonObject, key: string, where: string): string | undefined => {
    const x = field(o, key);
    if (x === undefined) return undefined;
    if (typeof x !== 'string') throw badPrev(`${where}.${key}`, `expected a string, got ${jsonType(x)}`);
    return x;
  };
  const interfaces = list('interfaces').map((it, i) => {
    const where = `prevResult.interfaces[${i}]`;
    if (!isObject(it)) throw badPrev(where, 'expected an object');
    const name = optString(it, 'name', where) ?? '';
    const sandbox = optString(it, 'sandbox', where);
    return sandbox === undefined ? { name } : { name, sandbox };
  });
  const ips = list('ips').map((ip, i): PrevResultIp => {
    const where = `prevResult.ips[${i}]`;
    if (!isObject(ip)) throw badPrev(where, 'expected an object');
    const address = optString(ip, 'address', where);
    if (address === undefined || !parsePrefix(address)) {
      throw badPrev(`${where}.address`, `expected an address in CIDR form, got ${JSON.stringify(address ?? null)}`);
    }
    const gateway = optString(ip, 'gateway', where);
    if (gateway !== undefined && gateway !== '' && !parseIp(gateway)) {
      throw badPrev(`${where}.gateway`, `expected an IP address, got ${JSON.stringify(gateway)}`);
    }
    const idx = field(ip, 'interface');
    if (idx !== undefined && (typeof idx !== 'number' || !Number.isInteger(idx) || idx < 0 || idx >= interfaces.length)) {
      throw badPrev(`${where}.interface`, `expected an index into interfaces (0-${interfaces.length - 1}), got ${JSON.stringify(idx)}`);
    }
    return {
      address,
      ...(gateway ? { gateway } : {}),
      ...(typeof idx === 'number' ? { interface: idx } : {}),
    };
  });
  return { raw: v, interfaces, ips };
}

/**
 * The ADD result of a chained plugin that changes no interface or address: prevResult as given,
 * stamped with the config's version, or an empty result of that version when there is none.
 */
export function passThroughResult(conf: NetConf): JsonObject {
  if (!conf.prevResult) return { cniVersion: conf.cniVersion };
  return { cniVersion: conf.cniVersion, ...withoutField(conf.prevResult.raw, 'cniVersion') };
}
