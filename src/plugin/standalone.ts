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
import * as fs from 'node:fs';
import * as path from 'node:path';
import { isSea } from 'node:sea';
import * as v8 from 'node:v8';
import { useAddonAt } from '../netns/addon';
import { useNetlinkBindingAt } from '../netns/netlink-binding';
import { cniMain } from './process';

/** The names of the native files beside the executable in the payload. */
export const PAYLOAD_ADDON = 'nftables_napi.node';
export const PAYLOAD_NETLINK = 'netlink.node';

/**
 * Where the payload's native files are: beside the executable, or beside the bundle when node
 * runs it. The shim starts the executable through the payload's own loader
 * (`istio-cni-ts/lib/ld-linux-*`), which is then what `process.execPath` names: its parent is the
 * payload directory.
 */
function nativeDir(): string {
  if (!isSea()) return __dirname;
  const dir = path.dirname(process.execPath);
  return path.basename(process.execPath).startsWith('ld-linux') && path.basename(dir) === 'lib' ? path.dirname(dir) : dir;
}

/** Runs one CNI request on this process' env and stdin, then ends the process with its code. */
export function runStandalone(): void {
  const dir = nativeDir();
  useAddonAt(path.join(dir, PAYLOAD_ADDON));
  useNetlinkBindingAt(path.join(dir, PAYLOAD_NETLINK));
  cniMain(process.env).then(
    (code) => process.exit(code),
    (e: unknown) => {
      // cniMain turns every plugin failure into a CNI error result; reaching this is a bug
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
  const snap = v8.startupSnapshot;
  if (snap?.isBuildingSnapshot()) {
    // What ADD and DEL load on first use, evaluated now so that it is part of the snapshot: the
    // nft wrapper, the rtnetlink code (dual-stack check, routes; netlink's binding itself is only
    // opened at run time) and fs.promises. Measured: DEL about 60 ms of CPU cheaper, VERSION
    // and ADD a few ms dearer for the larger snapshot (docs/payload.md). Synchronously, so they
    // are evaluated before the snapshot is taken; an import() would settle too late.
    /* eslint-disable @typescript-eslint/no-require-imports */
    require('../netns/nft');
    require('../netns/dualstack');
    require('../netns/tproxy-routes');
    /* eslint-enable @typescript-eslint/no-require-imports */
    void fs.promises;
    snap.setDeserializeMainFunction(runStandalone);
  } else {
    runStandalone();
  }
}
