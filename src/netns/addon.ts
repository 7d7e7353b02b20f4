// Loads the native addon (native/, built by binding.gyp into build/Release during npm install).
// Loading is lazy: code that only renders rules (e.g. `rules --dry-run`) never needs it.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** What the C++ side exports; src/netns/nft.ts is the typed surface over it. */
export interface NativeAddon {
  /**
   * One nft job: `script` run in the netns at `netnsPath` on a job pthread as one transaction;
   * rejects with nft's diagnostics. With opts.ifAbsent ("family name" of tables) the script runs
   * only if none of them exists; otherwise `applied` is false and `listing` holds
   * `nft -j list tables; list chains`. With opts.ifPresent (and an empty `script`) the scripts of
   * the tables that exist run, in order, as one transaction; `ran` names those tables. With
   * opts.inline the job may run on the JS thread (only for jobs that delete or flush no existing
   * object); `onJsThread` says whether it did.
   */
  nftRun(
    netnsPath: string,
    script: string,
    dryRun: boolean,
    json: boolean,
    opts?: { ifAbsent?: readonly string[]; inline?: boolean } | { ifPresent?: readonly { table: string; script: string }[] },
  ): Promise<{ output: string; error: string; applied: boolean; listing?: string; ran?: string[]; onJsThread: boolean }>;
  withNetnsSync<T>(netnsPath: string, fn: () => T): T;
  getOriginalDst(fd: number): { address: string; port: number; family: 'IPv4' | 'IPv6' };
  createTransparentListenSocket(family: 4 | 6, address: string, port: number, backlog: number): number;
  /** A TCP listening socket ('' = every interface); non-blocking, close-on-exec. */
  tcpListen(address: string, port: number, backlog: number): number;
  localAddress(fd: number): { address: string; port: number; family: 'IPv4' | 'IPv6' };
  // SOCK_SEQPACKET with SCM_RIGHTS (native/seqpacket.cc); the typed surface is src/netns/seqpacket.ts.
  seqpacketListen(path: string, backlog: number): number;
  seqpacketConnect(path: string): number;
  /** -1 when no connection is waiting. */
  seqpacketAccept(fd: number): number;
  /** A unix SOCK_STREAM listening socket (mode from the umask: set it around the call). */
  unixStreamListen(path: string, backlog: number): number;
  /** accept4 on any listening socket; -1 when no connection is waiting. */
  acceptConnection(fd: number): number;
  /** SO_PEERCRED of a connected unix socket. */
  peerCredentials(fd: number): { pid: number; uid: number; gid: number };
  /** Bytes sent, or -1 when the socket buffer is full. */
  seqpacketSend(fd: number, data: Buffer, passFd: number): number;
  /** null when nothing is waiting; an empty `data` is end of stream. */
  seqpacketRecv(fd: number, maxBytes: number, maxFds: number): NativeRecord | null;
  closeFd(fd: number): void;
  /** fcntl(F_DUPFD_CLOEXEC): a copy of fd numbered at least `min`. */
  dupFdAbove(fd: number, min: number): number;
  FdWatcher: new (fd: number, cb: (err: Error | null, readable: boolean, writable: boolean) => void) => NativeFdWatcher;
}

export interface NativeRecord {
  data: Buffer;
  fds: number[];
  truncated: boolean;
  controlTruncated: boolean;
}

/** A libuv poll handle on the event loop; it never closes the fd. */
export interface NativeFdWatcher {
  start(readable: boolean, writable: boolean): void;
  stop(): void;
  close(): void;
  ref(): void;
  unref(): void;
}

const ADDON_FILE = path.join('build', 'Release', 'nftables_napi.node');

let fixedPath: string | undefined;

/**
 * Load the addon from this file instead (the self-contained plugin: the copy beside its
 * executable, src/plugin/standalone.ts). Call before the first use.
 */
export function useAddonAt(file: string): void {
  fixedPath = file;
}

/** Where the addon is looked for: useAddonAt(), $ISTIO_CNI_TS_ADDON, else build/Release under the package root. */
export function addonPath(): string {
  if (fixedPath) return fixedPath;
  const override = process.env.ISTIO_CNI_TS_ADDON;
  if (override) return override;
  for (let d = __dirname; ; d = path.dirname(d)) {
    if (fs.existsSync(path.join(d, 'package.json')) && fs.existsSync(path.join(d, 'binding.gyp'))) {
      return path.join(d, ADDON_FILE);
    }
    if (path.dirname(d) === d) return path.resolve(__dirname, '..', '..', '..', ADDON_FILE);
  }
}

let loaded: NativeAddon | undefined;

export function addon(): NativeAddon {
  if (loaded) return loaded;
  const file = addonPath();
  if (!fs.existsSync(file)) {
    throw new Error(
      `the native addon is not built: ${file} is missing. Build it with \`npm install\` (or \`npm run install\`), ` +
        'which runs node-gyp; it needs g++, make, python3 and libnftables-dev (apt-get install libnftables-dev)',
    );
  }
  try {
    // process.dlopen is what require() does for a .node file; it also works where require()
    // only knows built-in modules (a single executable application).
    const m = { exports: {} as NativeAddon };
    process.dlopen(m, file);
    loaded = m.exports;
  } catch (e) {
    throw new Error(`cannot load the native addon ${file}: ${(e as Error).message} (rebuild it with \`npm run install\`)`);
  }
  return loaded;
}
