// SOCK_SEQPACKET unix sockets that carry file descriptors (SCM_RIGHTS), driven by the Node event
// loop: the addon (native/seqpacket.cc) makes non-blocking system calls, and a libuv poll handle
// says when to retry. No thread ever blocks on these sockets. This is the transport of ZDS, the
// protocol between the node agent and ztunnel; the protocol itself is src/zds.
import * as fs from 'node:fs';
import { NativeFdWatcher, NativeRecord, addon } from './addon';

/** A socket error with an errno-style code: ETIMEDOUT, EPIPE, ECONNRESET, ECLOSED (closed here). */
export class SocketError extends Error {
  override readonly name = 'SocketError';
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

export interface Packet {
  readonly data: Buffer;
  /** Descriptors that came with the record (now owned by the receiver, close-on-exec). */
  readonly fds: readonly number[];
  /** The record was longer than the buffer: `data` holds only its start. */
  readonly truncated: boolean;
  /** More descriptors came than were asked for; the extra ones were closed by the kernel. */
  readonly controlTruncated: boolean;
}

export interface RecvOptions {
  /** Largest record accepted; a longer one comes back `truncated`. */
  readonly maxBytes: number;
  /** Descriptors accepted with one record (0: any that come are closed by the kernel). */
  readonly maxFds?: number;
  /** Rejects with ETIMEDOUT when nothing arrives by then; default: wait forever. */
  readonly timeoutMs?: number;
}

interface Waiter {
  resolve(): void;
  reject(e: Error): void;
  timer?: NodeJS.Timeout;
}

function asSocketError(e: unknown, what: string): SocketError {
  if (e instanceof SocketError) return e;
  const err = e as Error & { code?: string };
  return new SocketError(`${what}: ${err.message}`, err.code ?? 'EIO');
}

/** One connected SOCK_SEQPACKET socket. Records go out and come in whole, one at a time. */
export class SeqpacketSocket {
  private readonly watcher: NativeFdWatcher;
  private reader?: Waiter;
  private writer?: Waiter;
  private idleRead?: () => void;
  private closedFlag = false;

  constructor(readonly fd: number) {
    this.watcher = new (addon().FdWatcher)(fd, (err, readable, writable) => this.onPoll(err, readable, writable));
  }

  /** Connects to a listening SOCK_SEQPACKET socket at `path`. */
  static connect(path: string): SeqpacketSocket {
    try {
      return new SeqpacketSocket(addon().seqpacketConnect(path));
    } catch (e) {
      throw asSocketError(e, `connect ${path}`);
    }
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  private onPoll(err: Error | null, readable: boolean, writable: boolean): void {
    if (err) {
      // libuv reports a pending socket error (POLLERR: the peer reset the connection, say) as
      // EBADF, though the fd is fine. Wake the waiters so their own recv/send says what happened
      // (ECONNRESET, EPIPE or end of stream); the syscall consumes the error, so no busy loop.
      if (this.reader) this.settle('reader');
      else this.idleRead?.();
      this.settle('writer');
    } else {
      if (readable) {
        if (this.reader) this.settle('reader');
        else this.idleRead?.();
      }
      if (writable) this.settle('writer');
    }
    this.arm();
  }

  private settle(which: 'reader' | 'writer', err?: Error): void {
    const w = this[which];
    if (!w) return;
    this[which] = undefined;
    clearTimeout(w.timer);
    if (err) w.reject(err);
    else w.resolve();
  }

  private arm(): void {
    if (this.closedFlag) return;
    const read = !!this.reader || !!this.idleRead;
    if (read || this.writer) this.watcher.start(read, !!this.writer);
    else this.watcher.stop();
  }

  /**
   * Called when something (a record, end of stream or an error) can be read while no read is
   * waiting: how a peer that should be quiet is noticed going away, or talking out of turn.
   * undefined stops it.
   */
  setIdleReadHandler(cb: (() => void) | undefined): void {
    this.idleRead = cb;
    this.arm();
  }

  private wait(which: 'reader' | 'writer', timeoutMs: number | undefined, what: string): Promise<void> {
    if (this.closedFlag) return Promise.reject(new SocketError(`${what}: the socket is closed`, 'ECLOSED'));
    if (this[which]) return Promise.reject(new SocketError(`${what}: another ${which === 'reader' ? 'read' : 'write'} is waiting`, 'EBUSY'));
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = { resolve, reject };
      if (timeoutMs !== undefined && Number.isFinite(timeoutMs)) {
        w.timer = setTimeout(
          () => {
            if (this[which] !== w) return;
            this[which] = undefined;
            this.arm();
            reject(new SocketError(`${what}: nothing within ${timeoutMs} ms`, 'ETIMEDOUT'));
          },
          Math.max(0, timeoutMs),
        );
      }
      this[which] = w;
      this.arm();
    });
  }

  /** Resolves when a record (or end of stream) can be read; rejects on timeout or close. */
  waitReadable(timeoutMs?: number): Promise<void> {
    return this.wait('reader', timeoutMs, 'read');
  }

  /** Takes a record if one is waiting: undefined if none, a record with empty data at end of stream. */
  tryRecv(maxBytes: number, maxFds = 0): Packet | undefined {
    if (this.closedFlag) throw new SocketError('read: the socket is closed', 'ECLOSED');
    let r: NativeRecord | null;
    try {
      r = addon().seqpacketRecv(this.fd, maxBytes, maxFds);
    } catch (e) {
      throw asSocketError(e, 'read');
    }
    return r ?? undefined;
  }

  /** The next record; end of stream is a record with empty data (as Go reads it: io.EOF). */
  async recv(opts: RecvOptions): Promise<Packet> {
    const deadline = opts.timeoutMs === undefined ? undefined : Date.now() + opts.timeoutMs;
    for (;;) {
      const r = this.tryRecv(opts.maxBytes, opts.maxFds ?? 0);
      if (r) return r;
      await this.waitReadable(deadline === undefined ? undefined : deadline - Date.now());
    }
  }

  /**
   * Sends one record, with `passFd` as SCM_RIGHTS when given. Waits while the socket buffer is
   * full; rejects with ETIMEDOUT when it stays full past the timeout, EPIPE when the peer is gone.
   */
  async send(data: Buffer, passFd?: number, timeoutMs?: number): Promise<void> {
    const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    for (;;) {
      if (this.closedFlag) throw new SocketError('write: the socket is closed', 'ECLOSED');
      let n: number;
      try {
        n = addon().seqpacketSend(this.fd, data, passFd ?? -1);
      } catch (e) {
        throw asSocketError(e, 'write');
      }
      if (n >= 0) {
        if (n !== data.length) throw new SocketError(`write: only ${n} of ${data.length} bytes went out`, 'EIO');
        return;
      }
      await this.wait('writer', deadline === undefined ? undefined : deadline - Date.now(), 'write');
    }
  }

  /** Whether an active wait keeps the process alive (default yes). */
  setRef(on: boolean): void {
    if (on) this.watcher.ref();
    else this.watcher.unref();
  }

  /** Closes the socket; pending waits reject with ECLOSED. Closing twice is a no-op. */
  close(): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    this.idleRead = undefined;
    const e = new SocketError('the socket was closed', 'ECLOSED');
    this.settle('reader', e);
    this.settle('writer', e);
    this.watcher.close();
    addon().closeFd(this.fd);
  }
}

/**
 * A listening SOCK_SEQPACKET socket at a path. `onReadable` is called (on the event loop) while
 * connections wait to be accepted; call accept() then, or pause() to leave them queued.
 */
export class SeqpacketListener {
  private readonly watcher: NativeFdWatcher;
  private closedFlag = false;
  private paused = false;

  private constructor(
    readonly path: string,
    readonly fd: number,
    private readonly onReadable: () => void,
  ) {
    this.watcher = new (addon().FdWatcher)(fd, (err) => {
      if (err) return; // a listener has no error of its own to report; accept() will say
      this.onReadable();
    });
    this.watcher.start(true, false);
  }

  /**
   * Listens at `path`, created with `mode` (default 0600) from the start: a stale socket file
   * there is replaced, any other kind of file is refused (bindUnixSocket).
   */
  static listen(path: string, onReadable: () => void, opts: { backlog?: number; mode?: number } = {}): SeqpacketListener {
    const fd = bindUnixSocket(path, () => addon().seqpacketListen(path, opts.backlog ?? 16), opts.mode);
    return new SeqpacketListener(path, fd, onReadable);
  }

  /** The next waiting connection, or undefined when none is waiting. */
  accept(): SeqpacketSocket | undefined {
    if (this.closedFlag) return undefined;
    const fd = addon().seqpacketAccept(this.fd);
    return fd < 0 ? undefined : new SeqpacketSocket(fd);
  }

  /** Stops calling onReadable until resume() (queued connections wait in the backlog). */
  pause(): void {
    if (this.closedFlag || this.paused) return;
    this.paused = true;
    this.watcher.stop();
  }

  resume(): void {
    if (this.closedFlag || !this.paused) return;
    this.paused = false;
    this.watcher.start(true, false);
  }

  setRef(on: boolean): void {
    if (on) this.watcher.ref();
    else this.watcher.unref();
  }

  /** Stops listening and removes the socket file. */
  close(): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    this.watcher.close();
    addon().closeFd(this.fd);
    try {
      fs.unlinkSync(this.path);
    } catch {
      // already gone
    }
  }
}

/**
 * Makes a unix socket at `path` with `listen` (a call that binds and listens, returning the fd),
 * mode `mode` (default 0600) from its creation: the umask is set around the bind, so no other
 * user can connect in between. A stale socket file at the path is removed first; any other kind
 * of file (a regular file, a directory, a link) is left alone and refused with an error naming it.
 */
export function bindUnixSocket(path: string, listen: () => number, mode = 0o600): number {
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new SocketError(`${path}: ${(e as Error).message}`, (e as NodeJS.ErrnoException).code ?? 'EIO');
  }
  if (st && !st.isSocket()) throw new SocketError(`${path} exists and is not a socket; refusing to replace it`, 'EEXIST');
  if (st) fs.unlinkSync(path);
  const old = process.umask(~mode & 0o777);
  let fd: number;
  try {
    fd = listen();
  } catch (e) {
    throw asSocketError(e, `listen ${path}`);
  } finally {
    process.umask(old);
  }
  return fd;
}

/** Who connected (SO_PEERCRED): the kernel's record of the peer at connect time. */
export function peerCredentials(fd: number): { pid: number; uid: number; gid: number } {
  return addon().peerCredentials(fd);
}

/** Closes a descriptor received with a record (or any other this process owns). */
export function closeFd(fd: number): void {
  addon().closeFd(fd);
}
