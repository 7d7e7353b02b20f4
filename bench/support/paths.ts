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
