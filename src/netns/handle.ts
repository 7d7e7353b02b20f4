// The one handle on a network namespace: opened once from a path (CNI_NETNS, /proc/<pid>/ns/net)
// and used for every effect of one request or pod, so a listing and the apply that follows it,
// or rules and routes, all reach the same namespace even if the path is unmounted or reused
// meanwhile. It is the fd that goes to ztunnel (SCM_RIGHTS) and through which rules are applied
// (`/proc/self/fd/<fd>`), with the namespace's inode to tell "the same netns again" from "a new
// netns for the same pod". The fd is reference counted: the
// pod cache holds one reference and every message on its way to ztunnel holds another, so a pod
// removed while its Add waits in a queue cannot make the Add carry a recycled fd number.
import * as fs from 'node:fs';
import { addon } from './addon';

/**
 * Held netns fds are moved to numbers from here up, keeping 0..1023 free: libnftables polls its
 * netlink socket with select(), which aborts the process for an fd of FD_SETSIZE (1024) or more,
 * and an agent holding a netns per pod would otherwise push every new fd past that.
 */
export const HELD_FD_FLOOR = 1024;

/** A copy of `fd` above HELD_FD_FLOOR (the original is closed); `fd` itself when that fails (e.g. a low RLIMIT_NOFILE). */
function park(fd: number): number {
  let high: number;
  try {
    high = addon().dupFdAbove(fd, HELD_FD_FLOOR);
  } catch {
    return fd;
  }
  fs.closeSync(fd);
  return high;
}

export class NetnsOpenError extends Error {
  override readonly name = 'NetnsOpenError';
  constructor(
    message: string,
    readonly code: string,
    readonly netnsPath: string,
  ) {
    super(message);
  }
}

let nsfsDev: bigint | undefined;

/** The device number of nsfs (every namespace file lives on it). */
function nsfs(): bigint {
  nsfsDev ??= fs.statSync('/proc/self/ns/net', { bigint: true }).dev;
  return nsfsDev;
}

/** What a CNI_NETNS path points to: a netns, nothing, something else, or our own netns. */
export type NetnsState = 'ok' | 'missing' | 'not-netns' | 'own';

/** CNI_NETNS opened for one request: the pod's netns with its handle, or why there is none. */
export type OpenedNetns = { readonly state: 'ok'; readonly netns: NetnsHandle } | { readonly state: Exclude<NetnsState, 'ok'> };

let ownIno: bigint | undefined;

/**
 * The one "is this a netns" check: opens the path for the request (namespace files live on
 * nsfs; comparing with our own netns tells ours from a pod's). A path that does not resolve is
 * 'missing'; one that resolves to anything but a netns (a file, a FIFO, a socket) 'not-netns'.
 * The caller releases the handle.
 */
export function openPodNetns(netnsPath: string, source = netnsPath): OpenedNetns {
  let h: NetnsHandle;
  try {
    h = NetnsHandle.openForRequest(netnsPath, source);
  } catch (e) {
    if (!(e instanceof NetnsOpenError)) throw e;
    if (e.code === 'EINVAL') return { state: 'not-netns' };
    // Open refuses more than a stat does (a socket file): only what does not resolve is missing.
    return { state: resolves(netnsPath) ? 'not-netns' : 'missing' };
  }
  ownIno ??= fs.statSync('/proc/self/ns/net', { bigint: true }).ino;
  if (h.ino !== ownIno) return { state: 'ok', netns: h };
  h.release();
  return { state: 'own' };
}

/** Whether `netnsPath` names the namespace `ns` (a stat; false when the path is gone). */
export function namesNetns(netnsPath: string, ns: Pick<NetnsRef, 'ino'>): boolean {
  try {
    const st = fs.statSync(netnsPath, { bigint: true });
    return st.dev === nsfs() && st.ino === ns.ino;
  } catch {
    return false;
  }
}

function resolves(p: string): boolean {
  try {
    fs.statSync(p);
    return true;
  } catch {
    return false;
  }
}

/** Opens `netnsPath` and checks that it is a namespace file; open errors as the addon words them. */
function openNsfs(netnsPath: string, shownAs = netnsPath): { fd: number; ino: bigint } {
  let fd: number;
  try {
    // Non-blocking: a FIFO at the path must not block the JS thread (the nsfs check below refuses it).
    fd = fs.openSync(netnsPath, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK); // libuv opens close-on-exec
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    // The same words as the addon's (native/common.cc OpenNetns).
    throw new NetnsOpenError(
      err.code === 'ENOENT'
        ? `network namespace ${shownAs} does not exist (no such file: was the netns deleted?)`
        : `cannot open network namespace ${shownAs}: ${err.message}`,
      err.code ?? 'EIO',
      shownAs,
    );
  }
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    if (st.dev !== nsfs()) {
      throw new NetnsOpenError(`${shownAs} is not a network namespace (not an nsfs file; its bind mount may have been removed)`, 'EINVAL', shownAs);
    }
    return { fd, ino: st.ino };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/**
 * What the dataplane port and a request's code use of a handle: the path that names the netns
 * while it is held, its identity (inode), where it was opened from (for messages), and release.
 * NetnsHandle is the one implementation; unit tests stand in for it without a descriptor.
 */
export type NetnsRef = Pick<NetnsHandle, 'path' | 'ino' | 'source' | 'release'>;

export class NetnsHandle {
  private refs = 1;

  private constructor(
    readonly fd: number,
    readonly ino: bigint,
    /** Start time (clock ticks after boot) of the process the netns was found through; 0 when opened by path. */
    readonly ownerStarttime: bigint,
    /** Where it was opened from, for logs and error messages. */
    readonly source: string,
  ) {}

  /**
   * Opens a network namespace file (a CNI_NETNS bind mount, /proc/<pid>/ns/net) to hold it for a
   * pod's life: the fd is parked above HELD_FD_FLOOR. Refuses files that are not namespaces (e.g.
   * what an unmounted bind mount leaves behind).
   */
  static open(netnsPath: string, ownerStarttime = 0n): NetnsHandle {
    const { fd, ino } = openNsfs(netnsPath);
    return new NetnsHandle(park(fd), ino, ownerStarttime, netnsPath);
  }

  /**
   * Opens a netns for one request (a CNI ADD/DEL/CHECK, a repair): not parked, since it is held
   * for milliseconds. `source` names it in messages (CNI_NETNS when `netnsPath` is the
   * /proc/self/fd path of a descriptor the shim sent).
   */
  static openForRequest(netnsPath: string, source = netnsPath): NetnsHandle {
    const { fd, ino } = openNsfs(netnsPath, source);
    return new NetnsHandle(fd, ino, 0n, source);
  }

  /** A path that names this namespace for as long as the handle is open (for nft and netlink). */
  get path(): string {
    return `/proc/self/fd/${this.fd}`;
  }

  get open(): boolean {
    return this.refs > 0;
  }

  retain(): this {
    if (this.refs <= 0) throw new Error(`netns handle ${this.source} is already closed`);
    this.refs++;
    return this;
  }

  /** Drops one reference; the fd is closed with the last. */
  release(): void {
    if (this.refs <= 0) return;
    if (--this.refs === 0) fs.closeSync(this.fd);
  }
}
