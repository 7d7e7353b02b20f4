// Copying the plugin payload into the host's CNI bin dir(s) (Istio's copyBinaries).
//
// Every regular file of the payload directory is copied atomically, and so is its sub-directory
// istio-cni-ts/ (the self-contained plugin behind the shim, with its lib/, docs/payload.md), into
// a sub-directory of the same name. Other directories are skipped, as upstream does. The plugin executable itself
// (`istio-cni` in the payload) is installed under the name the conflist's `type` uses, so a
// different type name keeps config and binary in step.
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { DEFAULT_PLUGIN_TYPE } from './config';
import { atomicCopy, sameFile } from './fsutil';
import { Logger, nullLogger } from '../log/logger';

/** The payload's sub-directory holding the self-contained plugin (install/package.js). */
export const PLUGIN_PAYLOAD_DIR = 'istio-cni-ts';

/** The file name a payload file is installed under. */
export function installedName(payloadFile: string, pluginType: string): string {
  return payloadFile === DEFAULT_PLUGIN_TYPE ? pluginType : payloadFile;
}

function escapeGlob(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Removes `<name>.tmp.*` left behind by an interrupted copy. */
async function removeStaleTemps(dir: string, name: string, log: Logger): Promise<void> {
  const re = new RegExp(`^${escapeGlob(name)}\\.tmp\\.`);
  let entries: string[];
  try {
    entries = await fsp.readdir(dir);
  } catch {
    return;
  }
  const stale = entries.filter((e) => re.test(e));
  if (stale.length > 0) log.info('removing temporary files left by an earlier copy', { dir, files: stale });
  for (const f of stale) {
    await fsp.rm(path.join(dir, f), { force: true }).catch((e) => log.warn('cannot delete stale temp file', { file: f, error: String(e) }));
  }
}

/** The payload's list of its files (install/package.js), checked by the shim: copied last. */
const PAYLOAD_MANIFEST = 'MANIFEST';

/**
 * Copies the payload's sub-directory `name` (the self-contained plugin's executable, addon,
 * loader and libraries in lib/, docs/payload.md) into `<dir>/<name>/`, each file atomically,
 * sub-directories first and the MANIFEST last: while a copy is under way the shim finds files
 * that differ from the manifest it has and refuses them by name, rather than start a mix.
 */
async function copyPayloadDir(srcDir: string, name: string, targetDirs: readonly string[], log: Logger): Promise<void> {
  for (const dir of targetDirs) {
    const copied = await copyTree(path.join(srcDir, name), path.join(dir, name), log);
    if (copied > 0) log.info('copied plugin payload', { dir: path.join(dir, name), files: copied });
  }
}

async function copyTree(src: string, target: string, log: Logger): Promise<number> {
  const entries = await fsp.readdir(src, { withFileTypes: true });
  const order = (e: fs.Dirent) => (e.isDirectory() ? 0 : e.name === PAYLOAD_MANIFEST ? 2 : 1);
  entries.sort((x, y) => order(x) - order(y) || (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  await fsp.mkdir(target, { recursive: true, mode: 0o755 });
  let copied = 0;
  for (const e of entries) {
    const from = path.join(src, e.name);
    if (e.isDirectory()) {
      copied += await copyTree(from, path.join(target, e.name), log);
      continue;
    }
    let st: fs.Stats;
    try {
      st = await fsp.stat(from);
    } catch {
      continue;
    }
    if (!st.isFile()) continue;
    await removeStaleTemps(target, e.name, log);
    if (await sameFile(from, path.join(target, e.name))) continue;
    try {
      await atomicCopy(from, target, e.name);
    } catch (err) {
      log.error('failed to copy binary', { from, to: path.join(target, e.name), error: String(err) });
      throw err;
    }
    copied++;
  }
  return copied;
}

/**
 * Removes the plugin payload directory (see copyPayloadDir) from the target dirs: the plugin
 * binary goes on cleanup, and what it runs goes with it.
 */
export async function removePayloadDirs(srcDir: string, targetDirs: readonly string[], log: Logger = nullLogger): Promise<void> {
  if (!fs.existsSync(path.join(srcDir, PLUGIN_PAYLOAD_DIR))) return;
  for (const dir of targetDirs) {
    const target = path.join(dir, PLUGIN_PAYLOAD_DIR);
    if (!fs.existsSync(target)) continue;
    log.info(`removing plugin payload: ${target}`);
    await fsp.rm(target, { recursive: true, force: true });
  }
}

/**
 * Copies the payload to every target dir and returns the installed names. A target that already
 * holds the same bytes and mode is left alone (Istio rewrites it on every pass). The plugin
 * payload directory (the self-contained plugin behind the shim) is copied first, so the binary
 * the runtime executes never points at a missing one.
 */
export async function copyBinaries(srcDir: string, targetDirs: readonly string[], pluginType: string, log: Logger = nullLogger): Promise<Set<string>> {
  const installed = new Set<string>();
  const entries = await fsp.readdir(srcDir, { withFileTypes: true });
  if (entries.some((e) => e.name === PLUGIN_PAYLOAD_DIR && (e.isDirectory() || e.isSymbolicLink()))) {
    await copyPayloadDir(srcDir, PLUGIN_PAYLOAD_DIR, targetDirs, log);
    installed.add(PLUGIN_PAYLOAD_DIR);
  }
  for (const e of entries) {
    const src = path.join(srcDir, e.name);
    // Follow symlinks (an image may link the payload in); skip directories and special files.
    let st: fs.Stats;
    try {
      st = await fsp.stat(src);
    } catch {
      continue;
    }
    if (!st.isFile()) continue;
    const name = installedName(e.name, pluginType);
    for (const dir of targetDirs) {
      await removeStaleTemps(dir, name, log);
      const target = path.join(dir, name);
      if (await sameFile(src, target)) {
        log.debug('binary already up to date', { file: target });
        continue;
      }
      try {
        await atomicCopy(src, dir, name);
      } catch (err) {
        log.error('failed to copy binary', { from: src, to: target, error: String(err) });
        throw err;
      }
      log.info('copied binary', { file: name, dir });
    }
    installed.add(name);
  }
  return installed;
}
