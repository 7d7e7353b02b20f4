// The entry of the self-contained plugin executable (the payload's istio-cni-ts/istio-cni-plugin,
// docs/payload.md). install/package.js bundles this file with esbuild and builds a Node single
// executable application from it, with a V8 startup snapshot: everything this module imports
// (CNI protocol, config parsing, pod -> rules, the logger) is evaluated at build time and lives
// in the snapshot; at run time only the deserialize main below runs. What cannot be in a
// snapshot is loaded on first use at run time: the native addon and netlink's binding (from the
// executable's own directory), and node's http/https (their parser handles cannot be
// serialised; the bundle reaches them through a lazy proxy).
//
// Nothing here is needed by `node bin/istio-cni-ts.js` in CNI mode: src/main.ts goes straight to
// ./process, as this file does.
import * as path from 'node:path';
import { useAddonAt } from '../netns/addon';
import { runCniProcess } from './process';

/** The names of the native files beside the executable in the payload. */
export const PAYLOAD_ADDON = 'nftables_napi.node';
export const PAYLOAD_NETLINK = 'netlink.node';

/** Where the payload's native files are: beside the executable, or beside the bundle when node runs it. */
function nativeDir(): string {
  const sea = isSea();
  return sea ? path.dirname(process.execPath) : __dirname;
}

function isSea(): boolean {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return (require('node:sea') as { isSea(): boolean }).isSea();
  } catch {
    return false;
  }
}

/** Runs one CNI request on this process' env and stdin, then ends the process with its code. */
export function runStandalone(): void {
  const dir = nativeDir();
  useAddonAt(path.join(dir, PAYLOAD_ADDON));
  (globalThis as { __ictsNetlinkBinding?: string }).__ictsNetlinkBinding = path.join(dir, PAYLOAD_NETLINK);
  runCniProcess().then(
    (code) => process.exit(code),
    (e: unknown) => {
      // runCniProcess turns every plugin failure into a CNI error result; reaching this is a bug
      // (e.g. stdout closed). Still say so on stderr and fail.
      process.stderr.write(`istio-cni-ts: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}

/**
 * The bundle's entry (install/package.js). While the SEA's snapshot is being built it only
 * registers runStandalone as the deserialize main; otherwise (the bundle run by node) it runs.
 */
export function main(): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const v8 = require('node:v8') as typeof import('node:v8');
  const snap = v8.startupSnapshot;
  if (snap?.isBuildingSnapshot()) snap.setDeserializeMainFunction(runStandalone);
  else runStandalone();
}
