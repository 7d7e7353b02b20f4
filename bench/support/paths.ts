// Where the benchmarks find the package they measure.
import * as path from 'node:path';

/** The repository root (bench/support/ in the sources, dist/bench/support/ when built). */
export const PACKAGE_ROOT = path.resolve(__dirname, __dirname.includes(`${path.sep}dist${path.sep}`) ? '../../..' : '../..');
/** The CLI as the image runs it (`istio-cni-ts`). */
export const BIN = path.join(PACKAGE_ROOT, 'bin', 'istio-cni-ts.js');
/** What `npm run package` builds: the image's /opt/cni/bin (the agent's CNI_BIN_SOURCE_DIR). */
export const PAYLOAD_DIR = path.join(PACKAGE_ROOT, 'dist', 'payload');
/** Debian's compiled Go `loopback` plugin (containernetworking-plugins): the floor a plugin exec costs. */
export const GO_LOOPBACK = '/usr/lib/cni/loopback';

/**
 * The Node the payload's standalone plugin is built from (install/node-dist.js, cached by
 * `npm run package`), for `node -e 0` beside it; this process's Node when the package has none.
 */
export function payloadNode(): { bin: string; version: string } {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const dist = require(path.join(PACKAGE_ROOT, 'install', 'node-dist.js')) as { ensureNodeBinary(): { bin: string; version: string } };
    const n = dist.ensureNodeBinary();
    return { bin: n.bin, version: `v${n.version.replace(/^v/, '')}` };
  } catch {
    return { bin: process.execPath, version: process.version };
  }
}
