// The parts of libcni (containernetworking/cni v1.3.0) that decide which files in a CNI net dir
// are usable network configs. Istio picks its chaining target with these rules, and so does the
// container runtime, so we follow them closely: a file we call "valid" is one the runtime loads.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { JsonObject, JsonValue, compareGoStrings, isJsonObject, parseGoJson } from './gojson';

export class LibcniError extends Error {
  override name = 'LibcniError';
}

/** filepath.Ext: the suffix from the last dot of the last element (".conf" for a file named ".conf"). */
export function goExt(name: string): string {
  for (let i = name.length - 1; i >= 0 && name[i] !== '/'; i--) {
    if (name[i] === '.') return name.slice(i);
  }
  return '';
}

/**
 * libcni.ConfFiles: full paths of the non-directory entries whose extension is one of `exts`,
 * in directory order. A missing directory is not an error (empty result).
 */
export function confFiles(dir: string, exts: readonly string[]): string[] {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  return entries.filter((d) => !d.isDirectory() && exts.includes(goExt(d.name))).map((d) => path.join(dir, d.name));
}

export function sortGo(names: string[]): string[] {
  return names.sort(compareGoStrings);
}

// ---- Go json.Unmarshal into types.PluginConf: unknown keys ignored, keys matched exactly or
// ---- case-insensitively, null accepted anywhere, any other type mismatch is an error.

type Shape = 'string' | 'bool' | 'any' | { map: Shape } | { slice: Shape } | { struct: Record<string, Shape> };

const PLUGIN_CONF: Shape = {
  struct: {
    cniVersion: 'string',
    name: 'string',
    type: 'string',
    capabilities: { map: 'bool' },
    ipam: { struct: { type: 'string' } },
    dns: {
      struct: {
        nameservers: { slice: 'string' },
        domain: 'string',
        search: { slice: 'string' },
        options: { slice: 'string' },
      },
    },
    prevResult: { map: 'any' },
    'cni.dev/valid-attachments': { slice: { struct: { containerID: 'string', ifname: 'string' } } },
  },
};

function typeName(v: JsonValue): string {
  if (Array.isArray(v)) return 'array';
  if (v === null) return 'null';
  return typeof v === 'object' ? 'object' : typeof v;
}

/** Checks `v` against `shape` as Go's decoder would; returns the decoded top-level fields. */
function decode(v: JsonValue, shape: Shape, where: string): Map<string, JsonValue> {
  const fields = new Map<string, JsonValue>();
  if (v === null || shape === 'any') return fields;
  const mismatch = (want: string) => new LibcniError(`json: cannot unmarshal ${typeName(v)} into Go value of type ${want} (${where || 'top level'})`);
  if (shape === 'string') {
    if (typeof v !== 'string') throw mismatch('string');
  } else if (shape === 'bool') {
    if (typeof v !== 'boolean') throw mismatch('bool');
  } else if ('map' in shape) {
    if (!isJsonObject(v)) throw mismatch('map');
    for (const [k, item] of Object.entries(v)) decode(item, shape.map, `${where}.${k}`);
  } else if ('slice' in shape) {
    if (!Array.isArray(v)) throw mismatch('slice');
    v.forEach((item, i) => decode(item, shape.slice, `${where}[${i}]`));
  } else {
    if (!isJsonObject(v)) throw mismatch('struct');
    const names = Object.keys(shape.struct);
    for (const [k, item] of Object.entries(v)) {
      const field = names.find((n) => n === k) ?? names.find((n) => n.toLowerCase() === k.toLowerCase());
      if (field === undefined) continue;
      decode(item, shape.struct[field], where ? `${where}.${field}` : field);
      fields.set(field, item);
    }
  }
  return fields;
}

/** libcni.NetworkPluginConfFromBytes: the plugin must decode as types.PluginConf and name a `type`. */
export function pluginConfFromValue(v: JsonValue): { type: string; name: string; cniVersion: string } {
  const f = decode(v, PLUGIN_CONF, '');
  const str = (k: string) => (typeof f.get(k) === 'string' ? (f.get(k) as string) : '');
  if (str('type') === '') throw new LibcniError("error parsing configuration: missing 'type'");
  return { type: str('type'), name: str('name'), cniVersion: str('cniVersion') };
}

export function pluginConfFromBytes(text: string): { type: string; name: string; cniVersion: string } {
  let v: JsonValue;
  try {
    v = parseGoJson(text);
  } catch (e) {
    throw new LibcniError(`error parsing configuration: ${(e as Error).message}`);
  }
  return pluginConfFromValue(v);
}

/** strconv.Atoi as libcni's version parser uses it. */
function atoi(s: string): number {
  if (!/^[+-]?[0-9]+$/.test(s)) throw new LibcniError(`invalid version part ${JSON.stringify(s)}`);
  const n = BigInt(s);
  if (n > 9223372036854775807n || n < -9223372036854775808n) throw new LibcniError(`version part out of range: ${s}`);
  return Number(n);
}

function parseVersion(v: string): [number, number, number] {
  if (v === '') return [0, 1, 0];
  const parts = v.split('.');
  if (parts.length >= 4) throw new LibcniError(`invalid version ${JSON.stringify(v)}: too many parts`);
  return [atoi(parts[0]), parts.length >= 2 ? atoi(parts[1]) : 0, parts.length >= 3 ? atoi(parts[2]) : 0];
}

function greaterThan(a: string, b: string): boolean {
  const [x, y] = [parseVersion(a), parseVersion(b)];
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] > y[i];
  return false;
}

const LIBCNI_CURRENT = '1.1.0';

export interface ConfList {
  name: string;
  pluginCount: number;
}

/** libcni.NetworkConfFromBytes (no plugin loading from side directories). */
export function confListFromValue(raw: JsonValue): ConfList & { loadOnlyInlinedPlugins: boolean } {
  // json.Unmarshal into a map: `null` leaves it empty, anything but an object is an error.
  if (raw !== null && !isJsonObject(raw)) {
    throw new LibcniError(`error parsing configuration list: cannot unmarshal ${typeName(raw)} into a map`);
  }
  const list: JsonObject = raw ?? {};
  const get = (k: string): JsonValue | undefined => (Object.prototype.hasOwnProperty.call(list, k) ? list[k] : undefined);
  const name = get('name');
  if (name === undefined) throw new LibcniError('error parsing configuration list: no name');
  if (typeof name !== 'string') throw new LibcniError(`error parsing configuration list: invalid name type ${typeName(name)}`);
  let cniVersion = '';
  const rawVersion = get('cniVersion');
  if (rawVersion !== undefined) {
    if (typeof rawVersion !== 'string') throw new LibcniError('error parsing configuration list: invalid cniVersion type');
    cniVersion = rawVersion;
  }
  const rawVersions = get('cniVersions');
  if (rawVersions !== undefined) {
    if (!Array.isArray(rawVersions)) throw new LibcniError('error parsing configuration list: invalid type for cniVersions');
    for (const rv of rawVersions) {
      if (typeof rv !== 'string') throw new LibcniError('error parsing configuration list: invalid type in cniVersions');
      greaterThan(rv, LIBCNI_CURRENT);
    }
    if (cniVersion !== '') greaterThan(cniVersion, LIBCNI_CURRENT);
  }
  const readBool = (key: string): boolean => {
    const v = get(key);
    if (v === undefined) return false;
    if (typeof v === 'boolean') return v;
    if (typeof v !== 'string') throw new LibcniError(`error parsing configuration list: invalid type for ${key}`);
    const s = v.toLowerCase();
    if (s === 'true') return true;
    if (s === 'false') return false;
    throw new LibcniError(`error parsing configuration list: invalid value ${JSON.stringify(s)} for ${key}`);
  };
  readBool('disableCheck');
  readBool('disableGC');
  const loadOnlyInlinedPlugins = readBool('loadOnlyInlinedPlugins');
  const plugins = get('plugins');
  if (plugins === undefined) {
    if (loadOnlyInlinedPlugins) {
      throw new LibcniError("error parsing configuration list: `loadOnlyInlinedPlugins` is true, and no 'plugins' key");
    }
    return { name, pluginCount: 0, loadOnlyInlinedPlugins };
  }
  if (!Array.isArray(plugins)) throw new LibcniError("error parsing configuration list: invalid 'plugins' type");
  if (plugins.length === 0) throw new LibcniError('error parsing configuration list: no plugins in list');
  plugins.forEach((p, i) => {
    try {
      pluginConfFromValue(p);
    } catch (e) {
      throw new LibcniError(`failed to parse plugin config ${i}: ${(e as Error).message}`);
    }
  });
  return { name, pluginCount: plugins.length, loadOnlyInlinedPlugins };
}

/** libcni.ConfListFromFile: the list, plus `<dir>/<name>/*.conf` plugins unless only inlined ones count. */
export function confListFromFile(file: string): ConfList {
  const text = fs.readFileSync(file, 'utf8');
  let raw: JsonValue;
  try {
    raw = parseGoJson(text);
  } catch (e) {
    throw new LibcniError(`error parsing configuration list: ${(e as Error).message}`);
  }
  const list = confListFromValue(raw);
  let count = list.pluginCount;
  if (!list.loadOnlyInlinedPlugins) {
    for (const f of confFiles(path.join(path.dirname(file), list.name), ['.conf'])) {
      pluginConfFromBytes(fs.readFileSync(f, 'utf8'));
      count++;
    }
  }
  if (count === 0) throw new LibcniError('no plugin configs found');
  return { name: list.name, pluginCount: count };
}

/** libcni.ConfFromFile + ConfListFromConf: a single-plugin `.conf`, up-converted to a one-entry list. */
export function confListFromConfFile(file: string): ConfList {
  const conf = pluginConfFromBytes(fs.readFileSync(file, 'utf8'));
  return { name: conf.name, pluginCount: 1 };
}
