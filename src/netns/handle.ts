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

/**
 * The one "is this a netns file" check by path (two local stats, microseconds): namespace files
 * live on nsfs, and comparing with our own netns tells ours from a pod's. (The addon also refuses
 * a namespace of another type when it enters one.)
 */
export function inspectNetns(netnsPath: string): NetnsState {
  const stat = (p: string) => {
    try {
      return fs.statSync(p, { bigint: true });
    } catch {
      return undefined;
    }
  };
  const target = stat(netnsPath);
  if (!target) return 'missing';
  const own = stat('/proc/self/ns/net');
  if (!own || target.dev !== own.dev) return 'not-netns';
  return target.ino === own.ino ? 'own' : 'ok';
}

export class NetnsHandle {
  private refs = 1;

  private constructor(
    readonly fd: number,
    readonly ino: bigint,
    /** Start time (clock ticks after boot) of the process the netns was found through; 0 when opened by path. */
    readonly ownerStarttime: bigint,
    /** Where it was opened from, for logs. */
    readonly source: string,
  ) {}

  /**
   * Opens a network namespace file (a CNI_NETNS bind mount, /proc/<pid>/ns/net). Refuses files
   * that are not namespaces (e.g. what an unmounted bind mount leaves behind).
   */
  static open(netnsPath: string, ownerStarttime = 0n): NetnsHandle {
    let fd: number;
    try {
      // Non-blocking: a FIFO at the path must not block the JS thread (the nsfs check below refuses it).
      fd = fs.openSync(netnsPath, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK); // libuv opens close-on-exec
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      // The same words as the addon's (native/common.cc OpenNetns).
      throw new NetnsOpenError(
        err.code === 'ENOENT'
          ? `network namespace ${netnsPath} does not exist (no such file: was the netns deleted?)`
          : `cannot open network namespace ${netnsPath}: ${err.message}`,
        err.code ?? 'EIO',
        netnsPath,
      );
    }
    try {
      const st = fs.fstatSync(fd, { bigint: true });
      if (st.dev !== nsfs()) {
        throw new NetnsOpenError(`${netnsPath} is not a network namespace (not an nsfs file; its bind mount may have been removed)`, 'EINVAL', netnsPath);
      }
      return new NetnsHandle(park(fd), st.ino, ownerStarttime, netnsPath);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
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
