// Chaining the istio-cni plugin into the node's CNI config, following Istio's
// cni/pkg/install/cniconfig.go and checkValidCNIConfig (install.go) decision for decision.
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { InstallConfig, STANDALONE_CONF_NAME, cniConfFileMode, pluginConfigText, useIstioOwnedCNIConfig } from './config';
import { StaleSourceError, atomicWrite, exists, fileVersion } from './fsutil';
import { JsonObject, JsonValue, isJsonObject, marshalIndent, objectFrom, parseGoJson, without, hasOwn } from './gojson';
import { confFiles, confListFromConfFile, confListFromFile, sortGo } from './libcni';
import { Logger, nullLogger } from '../log/logger';
import { createFileWatcher } from './watcher';

export class CniConfigError extends Error {
  override name = 'CniConfigError';
}

export interface ConfigDeps {
  log?: Logger;
  /** Re-check period while waiting for a primary config (see watcher.ts). */
  pollMs?: number;
  /** Tests: runs after our merged config is on disk, just before it replaces the primary's. */
  beforeRename?: () => Promise<void> | void;
}

const DEFAULT_POLL_MS = 1000;

/**
 * The usable CNI network configs in `dir`, highest priority first (sorted by name), as the
 * container runtime would load them. Unparsable files, `.conf` files without a `type` and lists
 * without plugins are skipped with a warning. Throws when none is usable.
 */
export function getConfigFilenames(dir: string, log: Logger = nullLogger): string[] {
  const files = confFiles(dir, ['.conf', '.conflist']);
  if (files.length === 0) throw new CniConfigError(`no networks found in ${dir}`);
  const valid: string[] = [];
  for (const file of sortGo(files)) {
    try {
      const list = file.endsWith('.conflist') ? confListFromFile(file) : confListFromConfFile(file);
      if (list.pluginCount === 0) {
        log.warn('CNI config list has no networks, skipping', { file });
        continue;
      }
    } catch (e) {
      log.warn('error loading CNI config file, skipping', { file, error: (e as Error).message });
      continue;
    }
    valid.push(path.basename(file));
  }
  if (valid.length === 0) throw new CniConfigError(`no valid networks found in ${dir}`);
  return valid;
}

/**
 * The path of the config file to chain into. Standalone: `cniConfName` or YYY-istio-cni.conf.
 * Chained: `cniConfName`, else the highest-priority valid file; waits (until `signal` aborts)
 * for one to exist, accepting `x.conflist` for `x.conf` and the other way round.
 */
export async function getCNIConfigFilepath(
  signal: AbortSignal | undefined,
  cniConfName: string,
  netDir: string,
  chained: boolean,
  deps: ConfigDeps = {},
): Promise<string> {
  const log = deps.log ?? nullLogger;
  if (!chained) return path.join(netDir, cniConfName || STANDALONE_CONF_NAME);
  const watcher = createFileWatcher([netDir], { log, pollMs: deps.pollMs ?? DEFAULT_POLL_MS });
  try {
    let name = cniConfName;
    while (name === '') {
      try {
        name = getConfigFilenames(netDir, log)[0];
      } catch (e) {
        log.warn('chained plugin, but no usable CNI network config yet', { error: (e as Error).message });
        log.info('waiting for a CNI network config file', { dir: netDir });
        await watcher.wait(signal);
      }
    }
    let p = path.join(netDir, name);
    for (;;) {
      // The watcher was opened before the first check, so no change between check and wait is
      // lost; its poll timer bounds the wait when the directory itself appears late.
      if (exists(p)) break;
      if (p.endsWith('.conf') && exists(p + 'list')) {
        log.info(`${p} does not exist, but ${p}list does; using it`);
        p += 'list';
      } else if (p.endsWith('.conflist') && exists(p.slice(0, -4))) {
        log.info(`${p} does not exist, but ${p.slice(0, -4)} does; using it`);
        p = p.slice(0, -4);
      } else {
        log.info('CNI config file does not exist; waiting for it to be written', { file: p });
        await watcher.wait(signal);
      }
    }
    return p;
  } finally {
    watcher.close();
  }
}

function parseObject(text: string, what: string): JsonObject | null {
  let v: JsonValue;
  try {
    v = parseGoJson(text);
  } catch (e) {
    throw new CniConfigError(`error loading ${what} (JSON error): ${(e as Error).message}`);
  }
  if (v !== null && !isJsonObject(v)) {
    throw new CniConfigError(`error loading ${what} (JSON error): cannot unmarshal ${Array.isArray(v) ? 'array' : typeof v} into a map`);
  }
  return v;
}

function pluginsOf(conf: JsonObject | null, where: string): JsonValue[] {
  const plugins = conf !== null && hasOwn(conf, 'plugins') ? conf.plugins : undefined;
  if (!Array.isArray(plugins)) throw new CniConfigError(`${where}: error reading plugin list from CNI config`);
  return plugins;
}

function pluginAt(raw: JsonValue, where: string): JsonObject {
  if (!isJsonObject(raw)) throw new CniConfigError(`${where}: error reading plugin from CNI config plugin list`);
  return raw;
}

/** Index of the first plugin whose `type` is `pluginType` (-1 if none); non-objects before it are errors. */
function findPlugin(plugins: JsonValue[], pluginType: string, where: string): number {
  for (let i = 0; i < plugins.length; i++) {
    const p = pluginAt(plugins[i], where);
    if (hasOwn(p, 'type') && p.type === pluginType) return i;
  }
  return -1;
}

/**
 * Appends the plugin entry `newConfig` to the network config `existingConfig` (Istio's
 * insertCNIConfig). A single-plugin `.conf` becomes a `k8s-pod-network` list; in a list, the
 * first entry of our type is replaced by appending the new one last. Output is Go's
 * MarshalIndent of a map (sorted keys) plus a newline.
 */
export function insertCNIConfig(newConfig: string, existingConfig: string, pluginType = 'istio-cni'): string {
  const istio = parseObject(newConfig, 'Istio CNI config');
  const existing = parseObject(existingConfig, 'existing CNI config');
  const entry: JsonValue = istio === null ? null : without(istio, 'cniVersion');
  let result: JsonObject;
  if (existing !== null && hasOwn(existing, 'type')) {
    result = objectFrom([
      ['name', 'k8s-pod-network'],
      ['cniVersion', '0.3.1'],
      ['plugins', [without(existing, 'cniVersion'), entry]],
    ]);
  } else {
    const plugins = pluginsOf(existing, 'existing CNI config').slice();
    const i = findPlugin(plugins, pluginType, 'existing CNI plugin');
    if (i >= 0) plugins.splice(i, 1);
    plugins.push(entry);
    result = objectFrom([...Object.entries(existing ?? {}).filter(([k]) => k !== 'plugins'), ['plugins', plugins]]);
  }
  return marshalIndent(result) + '\n';
}

/**
 * The network config text without our plugin entry (for uninstall), or undefined when there was
 * none. Errors as Istio's Cleanup has them: unreadable JSON, no plugin list, a non-object entry.
 */
export function removeFromConfig(text: string, pluginType: string, where: string): string | undefined {
  const conf = parseObject(text, where);
  const plugins = pluginsOf(conf, where).slice();
  const i = findPlugin(plugins, pluginType, where);
  if (i < 0) return undefined;
  plugins.splice(i, 1);
  return marshalIndent(objectFrom([...Object.entries(conf ?? {}).filter(([k]) => k !== 'plugins'), ['plugins', plugins]])) + '\n';
}

/** Istio's createCNIConfigFile: build our plugin entry from `cfg` and write the config. */
export async function createCNIConfigFile(signal: AbortSignal | undefined, cfg: InstallConfig, deps: ConfigDeps = {}): Promise<string> {
  return writeCNIConfig(signal, pluginConfigText(cfg), cfg, deps);
}

/**
 * Writes the chained (or standalone) config and returns its path. Where Istio writes `x.conf`
 * and then renames it to `x.conflist` (leaving, for a moment, a `.conf` file that holds a list,
 * which runtimes reject), we write `x.conflist` atomically first and then remove `x.conf`: at
 * every instant the directory holds a valid config. A chained write lands only if the primary's
 * file is still the version we merged into; otherwise we merge again.
 */
export async function writeCNIConfig(signal: AbortSignal | undefined, pluginConfig: string, cfg: InstallConfig, deps: ConfigDeps = {}): Promise<string> {
  const log = deps.log ?? nullLogger;
  const owned = useIstioOwnedCNIConfig(cfg);
  if (cfg.cniConfName === '' && owned) {
    throw new CniConfigError('primary CNI config name is not specified, cannot write CNI config');
  }
  const primary = await getCNIConfigFilepath(signal, cfg.cniConfName, cfg.mountedCNINetDir, cfg.chainedCNIPlugin, deps);
  for (let attempt = 1; attempt <= CHECKED_MERGES; attempt++) {
    try {
      return await writeCNIConfigOnce(primary, pluginConfig, cfg, deps, true);
    } catch (e) {
      // The primary CNI rewrote its file while we merged our entry into the old one: merge again
      // into the new one rather than overwrite it (upstream would lose the primary's update).
      if (!(e instanceof StaleSourceError)) throw e;
      log.info('the CNI config changed while we wrote our entry; merging into the new version', { file: primary, attempt });
    }
  }
  // A primary that rewrites faster than we can flush a file: write as upstream does. Its next
  // write wakes our watcher, and the merge after the last one finds a quiet file.
  log.warn('the CNI config keeps changing while we write our entry; writing it anyway', { file: primary });
  return writeCNIConfigOnce(primary, pluginConfig, cfg, deps, false);
}

const CHECKED_MERGES = 5;

async function writeCNIConfigOnce(primary: string, pluginConfig: string, cfg: InstallConfig, deps: ConfigDeps, checked: boolean): Promise<string> {
  const log = deps.log ?? nullLogger;
  const owned = useIstioOwnedCNIConfig(cfg);
  let target = primary;
  let content = pluginConfig;
  let stillCurrent: (() => Promise<boolean>) | undefined;
  if (cfg.chainedCNIPlugin) {
    let existing: string;
    let version: string;
    try {
      version = await fileVersion(primary);
      existing = await fsp.readFile(primary, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new CniConfigError(`CNI config file ${primary} removed during configuration`);
      }
      throw e;
    }
    content = insertCNIConfig(pluginConfig, existing, cfg.pluginType);
    if (checked)
      stillCurrent = async () => {
        await deps.beforeRename?.();
        return (await fileVersion(primary).catch(() => '')) === version;
      };
  }
  if (owned) target = path.join(cfg.mountedCNINetDir, cfg.istioOwnedCNIConfigFilename);

  // Chained into someone else's file: keep that file's permissions. Otherwise 0600 (or 0640).
  let mode = cniConfFileMode(cfg);
  if (cfg.chainedCNIPlugin && !owned) {
    try {
      mode = fs.statSync(target).mode & 0o7777;
    } catch {
      // keep the configured mode
    }
  }
  if (cfg.chainedCNIPlugin && target.endsWith('.conf')) {
    const listPath = target + 'list';
    log.info('writing the chained config as .conflist', { from: target, to: listPath });
    await atomicWrite(listPath, content, mode, stillCurrent);
    await fsp.rm(target, { force: true });
    target = listPath;
  } else {
    await atomicWrite(target, content, mode, stillCurrent);
  }
  log.info('wrote CNI config', { file: target });
  return target;
}

export type Validity = { valid: true } | { valid: false; reason: string };

/**
 * Istio's checkValidCNIConfig. `cniConfigFilepath` is the file we last wrote ("" before the
 * first write). May set `cfg.cniConfName` (the primary config) exactly where upstream does,
 * which later writes and checks depend on.
 */
export async function checkValidCNIConfig(
  signal: AbortSignal | undefined,
  cfg: InstallConfig,
  cniConfigFilepath: string,
  deps: ConfigDeps = {},
): Promise<Validity> {
  const log = deps.log ?? nullLogger;
  const invalid = (reason: string): Validity => ({ valid: false, reason });
  let names: string[];
  try {
    names = getConfigFilenames(cfg.mountedCNINetDir, log);
  } catch (e) {
    return invalid((e as Error).message);
  }
  const first = names[0];
  const owned = useIstioOwnedCNIConfig(cfg);
  let second = '';
  if (owned) {
    if (names.length >= 2) second = names[1];
    if (first !== cfg.istioOwnedCNIConfigFilename) {
      if (Buffer.compare(Buffer.from(first), Buffer.from(cfg.istioOwnedCNIConfigFilename)) <= 0) {
        log.warn(
          `Istio owned CNI config ${cfg.istioOwnedCNIConfigFilename} has lower priority than ${first}; ` +
            'this leads to undefined behavior and a possible bypass of the mesh',
        );
      }
      if (cfg.cniConfName === '') cfg.cniConfName = first;
      return invalid(`istio owned CNI config does not exist or is not the highest priority; got ${first} instead`);
    }
  }

  const top = path.join(cfg.mountedCNINetDir, first);
  if (top !== cniConfigFilepath) {
    if (cfg.cniConfName !== '' || !cfg.chainedCNIPlugin) {
      // A configured file name (or standalone mode) pins the target: a preemption only warns.
      log.warn(`CNI config file ${JSON.stringify(cniConfigFilepath)} preempted by ${JSON.stringify(top)}`);
    } else {
      cfg.cniConfName = owned && first === cfg.istioOwnedCNIConfigFilename ? second : first;
      return invalid(`perform initial update of highest priority config ${top} using existing configuration from file ${cfg.cniConfName}`);
    }
  }

  if (!exists(cniConfigFilepath)) return invalid(`CNI config file removed: ${cniConfigFilepath}`);

  const readMap = (p: string): JsonObject | null => parseObject(fs.readFileSync(p, 'utf8'), p);
  try {
    if (cfg.chainedCNIPlugin) {
      if (owned && cfg.cniConfName === '') cfg.cniConfName = second;
      const plugins = pluginsOf(readMap(cniConfigFilepath), cniConfigFilepath);
      const types = new Set<string>();
      for (const raw of plugins) {
        const p = pluginAt(raw, cniConfigFilepath);
        const t = hasOwn(p, 'type') ? p.type : null;
        if (typeof t !== 'string') return invalid(`plugin type ${JSON.stringify(t)} not a string`);
        types.add(t);
      }
      if (!types.has(cfg.pluginType)) return invalid(`${cfg.pluginType} plugin not found in CNI config at ${cniConfigFilepath}`);
      if (owned) {
        // Our file must still carry every plugin of the primary config.
        const primary = await getCNIConfigFilepath(signal, cfg.cniConfName, cfg.mountedCNINetDir, true, deps);
        for (const raw of pluginsOf(readMap(primary), primary)) {
          const p = pluginAt(raw, primary);
          const t = hasOwn(p, 'type') ? p.type : null;
          if (typeof t !== 'string') return invalid(`plugin type ${JSON.stringify(t)} not a string`);
          if (!types.has(t)) return invalid(`plugin of type ${t} from primary CNI config is missing in Istio CNI config file`);
        }
      }
      return { valid: true };
    }
    const conf = readMap(cniConfigFilepath);
    if (conf === null || !hasOwn(conf, 'type') || conf.type !== cfg.pluginType) {
      return invalid(`istio-cni CNI config file modified: ${cniConfigFilepath}`);
    }
    return { valid: true };
  } catch (e) {
    if ((e as Error).name === 'AbortedError') throw e;
    return invalid((e as Error).message);
  }
}
