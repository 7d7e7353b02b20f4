// Copying the plugin payload into the host's CNI bin dir(s) (Istio's copyBinaries).
//
// Every regular file of the payload directory is copied atomically. The plugin executable itself
// (`istio-cni` in the payload) is installed under the name the conflist's `type` uses, so a
// different type name keeps config and binary in step.
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { DEFAULT_PLUGIN_TYPE } from './config';
import { atomicCopy, sameFile } from './fsutil';
import { Logger, nullLogger } from './log';

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

/**
 * Copies the payload to every target dir and returns the installed names. A target that already
 * holds the same bytes and mode is left alone (Istio rewrites it on every pass).
 */
export async function copyBinaries(
  srcDir: string,
  targetDirs: readonly string[],
  pluginType: string,
  log: Logger = nullLogger,
): Promise<Set<string>> {
  const installed = new Set<string>();
  const entries = await fsp.readdir(srcDir, { withFileTypes: true });
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
