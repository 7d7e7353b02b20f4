// The ZDS server: ztunnel connects to the agent's SOCK_SEQPACKET socket (ZTUNNEL_UDS_ADDRESS) and
// is told which pods to serve, each with its netns fd. Behaviour follows Istio's
// cni/pkg/nodeagent/ztunnelserver*.go:
//
// - accept at most 5 connections a second (burst 1): a ztunnel stuck reconnecting cannot flood us;
// - per connection: ztunnel's ZdsHello first (5 s), then the snapshot (an Add with the fd for each
//   enrolled pod whose netns is open, a Keep for each other enrolled pod), then SnapshotSent;
// - strictly one request at a time, each followed by its ack: 5 s to write, 5 s for the ack;
// - an Add goes to the newest connection only ("no ztunnel connection" when there is none); a
//   Del goes to every connection (a ztunnel being replaced must drop the pod too);
// - a ztunnel that closes, or sends anything while nothing was asked, is dropped.
//
// Ours, not upstream's: the socket is 0600 from its creation (upstream's follows the umask),
// a non-socket at its path is refused, only root peers are served (SO_PEERCRED; ztunnel runs as
// root and Istio has no setting for another uid), and at most LIMITS.zds connections are held.
//
// Differences, all in the direction of dropping a connection whose state is unknown:
// - upstream keeps a connection after an ack timeout or an unreadable ack; here it is closed,
//   because acks are matched to requests only by order, and a late ack would be taken for the
//   answer to the next request. The caller's request fails either way.
// - upstream checks liveness by a 10 ms read every 5 s of silence; here the socket is watched
//   for readability whenever it is idle, so a ztunnel that goes away is noticed at once.
import { randomUUID } from 'node:crypto';
import { Logger } from '../../log/logger';
import { SeqpacketListener, SeqpacketSocket, SocketError, closeFd, peerCredentials } from '../../netns/seqpacket';
import { LIMITS } from '../limits';
import { refusalLogger, servedUid } from '../listener';
import { WorkloadInfo, WorkloadRequest, ZdsDecodeError, decodeHello, decodeResponse, encodeRequest } from '../../zds/messages';
import { NetnsHandle } from '../../netns/handle';
import { SnapshotEntry } from './enrolled-pods';

/** Largest record read from ztunnel (upstream's buffer); a longer one is refused as truncated. */
export const ZDS_READ_BUFFER = 1024;

export interface ZdsTimeouts {
  /** For ztunnel's hello after it connects. */
  readonly helloMs: number;
  /** For a request to leave (the socket buffer being full). */
  readonly writeMs: number;
  /** For the ack of each request. */
  readonly ackMs: number;
  /** Minimum gap between two accepts (5 per second). */
  readonly acceptIntervalMs: number;
  /** Requests that may wait for one connection (upstream's channel of 100). */
  readonly queueLimit: number;
  /** Connections held at once (2 during a ztunnel upgrade); at the cap the listener pauses. */
  readonly maxConnections: number;
}

export const DEFAULT_ZDS_TIMEOUTS: ZdsTimeouts = {
  helloMs: 5000,
  writeMs: 5000,
  ackMs: 5000,
  acceptIntervalMs: 200,
  queueLimit: 100,
  maxConnections: LIMITS.zds.maxConnections,
};

export interface ZtunnelServerOptions {
  readonly path: string;
  readonly log: Logger;
  /** The pods a new connection is told about; netns handles are retained for the server. */
  readonly snapshot: () => SnapshotEntry[];
  readonly timeouts?: Partial<ZdsTimeouts>;
  /** Told the number of connections whenever it changes (the ztunnel_connected gauge). */
  readonly onConnections?: (n: number) => void;
  /**
   * Listen, but accept nobody until start(): the agent creates the socket early and takes
   * connections once its pod snapshot is built (ztunnel waits in the backlog meanwhile).
   */
  readonly paused?: boolean;
}

/** Why a request did not get a clean ack. `retryable`: try again later (maybe another ztunnel). */
export class ZdsError extends Error {
  override readonly name = 'ZdsError';
  constructor(
    message: string,
    /** 'no-connection' | 'io' (connection dropped) | 'ack' (ztunnel refused) | 'queue-full' */
    readonly kind: 'no-connection' | 'io' | 'ack' | 'queue-full',
  ) {
    super(message);
  }
}

interface Pending {
  readonly req: WorkloadRequest;
  readonly data: Buffer;
  readonly netns?: NetnsHandle;
  resolve(): void;
  reject(e: Error): void;
}

/** Counters for tests and the benchmark. */
export interface ZdsStats {
  accepted: number;
  dropped: number;
  requests: number;
  snapshots: number;
  /** Connections refused for their peer's uid. */
  refused: number;
}

export class ZtunnelConnection {
  readonly id = randomUUID();
  private readonly queue: Pending[] = [];
  private busy = false;
  private ready = false;
  private closedReason?: string;

  constructor(
    private readonly server: ZtunnelServer,
    private readonly sock: SeqpacketSocket,
    private readonly t: ZdsTimeouts,
    private readonly log: Logger,
  ) {}

  get closed(): boolean {
    return this.closedReason !== undefined;
  }

  /** Hello, snapshot, then requests as they come. Never rejects: failures close the connection. */
  async run(): Promise<void> {
    try {
      const hello = await this.readHello();
      this.log.info('received hello from ztunnel', { conn_uuid: this.id, version: hello });
      await this.sendSnapshot();
      this.ready = true;
      void this.pump();
    } catch (e) {
      this.close((e as Error).message);
    }
  }

  private async readHello(): Promise<string> {
    let rec;
    try {
      rec = await this.sock.recv({ maxBytes: ZDS_READ_BUFFER, timeoutMs: this.t.helloMs });
    } catch (e) {
      throw new ZdsError(`reading ztunnel's hello: ${(e as Error).message}`, 'io');
    }
    for (const fd of rec.fds) closeFd(fd);
    if (rec.data.length === 0) throw new ZdsError('ztunnel closed the connection before its hello', 'io');
    if (rec.truncated) throw new ZdsError(`ztunnel's hello is longer than ${ZDS_READ_BUFFER} bytes (truncated message)`, 'io');
    try {
      return decodeHello(rec.data).version;
    } catch (e) {
      throw new ZdsError((e as ZdsDecodeError).message, 'io');
    }
  }

  private async sendSnapshot(): Promise<void> {
    const entries = this.server.takeSnapshot();
    try {
      let adds = 0;
      let keeps = 0;
      for (const e of entries) {
        const req: WorkloadRequest = e.netns
          ? { kind: 'add', uid: e.uid, workload: e.workload ?? { name: '', namespace: '', serviceAccount: '' } }
          : { kind: 'keep', uid: e.uid };
        const ack = await this.exchange(encodeRequest(req), e.netns?.fd);
        if (e.netns) adds++;
        else keeps++;
        if (ack !== '') this.log.error('ztunnel refused a pod of the snapshot', { conn_uuid: this.id, uid: e.uid, ackError: ack });
      }
      const ack = await this.exchange(encodeRequest({ kind: 'snapshotSent' }));
      if (ack !== '') this.log.error('ztunnel refused the end of the snapshot', { conn_uuid: this.id, ackError: ack });
      this.server.stats.snapshots++;
      this.log.info('snapshot sent to ztunnel', { conn_uuid: this.id, adds, keeps });
    } finally {
      for (const e of entries) e.netns?.release();
    }
  }

  /** Queues a request; resolves with nothing on a clean ack, rejects with ZdsError otherwise. */
  send(req: WorkloadRequest, netns?: NetnsHandle): Promise<void> {
    if (this.closed) return Promise.reject(new ZdsError(`ztunnel connection ${this.id} is closed`, 'io'));
    if (this.queue.length >= this.t.queueLimit) {
      return Promise.reject(new ZdsError(`${this.queue.length} requests already wait for ztunnel connection ${this.id}`, 'queue-full'));
    }
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ req, data: encodeRequest(req), netns: netns?.retain(), resolve, reject });
      if (this.ready) void this.pump();
    });
  }

  private async pump(): Promise<void> {
    if (this.busy || this.closed) return;
    this.busy = true;
    this.sock.setIdleReadHandler(undefined);
    try {
      while (this.queue.length > 0 && !this.closed) {
        const p = this.queue.shift()!;
        try {
          const ack = await this.exchange(p.data, p.netns?.fd);
          if (ack === '') p.resolve();
          else p.reject(new ZdsError(`ztunnel answered ${p.req.kind} of ${'uid' in p.req ? p.req.uid : ''} with an error: ${ack}`, 'ack'));
        } catch (e) {
          p.reject(e as Error);
        } finally {
          p.netns?.release();
        }
      }
    } finally {
      this.busy = false;
    }
    if (!this.closed) this.sock.setIdleReadHandler(() => this.onIdleReadable());
  }

  /** One request and its ack. Any failure but an ack error closes the connection. */
  private async exchange(data: Buffer, fd?: number): Promise<string> {
    this.server.stats.requests++;
    try {
      await this.sock.send(data, fd, this.t.writeMs);
      const rec = await this.sock.recv({ maxBytes: ZDS_READ_BUFFER, timeoutMs: this.t.ackMs });
      for (const x of rec.fds) closeFd(x);
      if (rec.data.length === 0) throw new ZdsError('ztunnel closed the connection', 'io');
      if (rec.truncated) throw new ZdsError(`ztunnel's answer is longer than ${ZDS_READ_BUFFER} bytes (truncated message)`, 'io');
      if (rec.controlTruncated) throw new ZdsError("ztunnel's answer carried file descriptors (truncated control message)", 'io');
      return decodeResponse(rec.data).error;
    } catch (e) {
      const err =
        e instanceof ZdsError
          ? e
          : e instanceof SocketError && e.code === 'ETIMEDOUT'
            ? new ZdsError(`no ack from ztunnel: ${e.message}`, 'io')
            : new ZdsError(`ztunnel connection failed: ${(e as Error).message}`, 'io');
      this.close(err.message);
      throw err;
    }
  }

  /** ztunnel speaks only when asked: anything readable now is its going away, or a protocol error. */
  private onIdleReadable(): void {
    let rec;
    try {
      rec = this.sock.tryRecv(ZDS_READ_BUFFER);
    } catch (e) {
      this.close(`ztunnel connection failed: ${(e as Error).message}`);
      return;
    }
    if (!rec) return;
    for (const fd of rec.fds) closeFd(fd);
    if (rec.data.length === 0) this.close('ztunnel closed the connection', 'info');
    else this.close(`protocol error: ztunnel sent ${rec.data.length} bytes while nothing was asked`);
  }

  close(reason: string, level: 'info' | 'warn' = 'warn'): void {
    if (this.closed) return;
    this.closedReason = reason;
    this.sock.close();
    const err = new ZdsError(`ztunnel connection ${this.id} closed: ${reason}`, 'io');
    for (const p of this.queue.splice(0)) {
      p.netns?.release();
      p.reject(err);
    }
    this.log[level]('ztunnel connection closed', { conn_uuid: this.id, reason });
    this.server.forget(this);
  }
}

export class ZtunnelServer {
  private readonly listener: SeqpacketListener;
  /** Oldest first; Adds go to the last. */
  private readonly conns: ZtunnelConnection[] = [];
  private readonly t: ZdsTimeouts;
  private nextAcceptAt = 0;
  private resumeTimer?: NodeJS.Timeout;
  private closedFlag = false;
  private started: boolean;
  private readonly reportRefused: (uid: number, pid: number) => void;
  readonly stats: ZdsStats = { accepted: 0, dropped: 0, requests: 0, snapshots: 0, refused: 0 };

  private constructor(private readonly opts: ZtunnelServerOptions) {
    this.t = { ...DEFAULT_ZDS_TIMEOUTS, ...opts.timeouts };
    this.started = !opts.paused;
    this.reportRefused = refusalLogger(opts.log, opts.path);
    this.listener = SeqpacketListener.listen(opts.path, () => this.onAcceptable(), { mode: 0o600 });
    if (opts.paused) this.listener.pause();
  }

  /** Starts accepting (after `paused`). */
  start(): void {
    this.started = true;
    if (!this.closedFlag && this.conns.length < this.t.maxConnections) this.listener.resume();
  }

  /** Listens at opts.path, a socket of mode 0600 (a stale socket file there is replaced, anything else refused). */
  static listen(opts: ZtunnelServerOptions): ZtunnelServer {
    return new ZtunnelServer(opts);
  }

  get path(): string {
    return this.opts.path;
  }

  get connections(): number {
    return this.conns.length;
  }

  /** For the connection's snapshot. */
  takeSnapshot(): SnapshotEntry[] {
    return this.opts.snapshot();
  }

  private onAcceptable(): void {
    if (this.conns.length >= this.t.maxConnections) {
      // At the cap: leave newcomers in the backlog until a connection closes (forget()).
      this.listener.pause();
      return;
    }
    const now = Date.now();
    if (now < this.nextAcceptAt) {
      // Rate limited: leave the rest in the backlog until the next token.
      this.listener.pause();
      clearTimeout(this.resumeTimer);
      this.resumeTimer = setTimeout(() => {
        this.resumeTimer = undefined;
        this.listener.resume();
      }, this.nextAcceptAt - now);
      return;
    }
    let sock: SeqpacketSocket | undefined;
    try {
      sock = this.listener.accept();
    } catch (e) {
      this.opts.log.error('failed to accept a ztunnel connection', { error: (e as Error).message });
      return;
    }
    if (!sock) return;
    let cred: { uid: number; pid: number } | undefined;
    try {
      cred = peerCredentials(sock.fd);
    } catch {
      cred = undefined;
    }
    if (!cred || !servedUid(cred.uid)) {
      // Another user must never become "the newest ztunnel" and receive pods' netns descriptors.
      sock.close();
      this.stats.refused++;
      if (cred) this.reportRefused(cred.uid, cred.pid);
      return;
    }
    this.nextAcceptAt = now + this.t.acceptIntervalMs;
    const conn = new ZtunnelConnection(this, sock, this.t, this.opts.log);
    this.conns.push(conn);
    this.stats.accepted++;
    this.opts.log.info('new ztunnel connected', { conn_uuid: conn.id, connected: this.conns.length });
    this.opts.onConnections?.(this.conns.length);
    void conn.run();
  }

  /** Called by a connection as it closes. */
  forget(conn: ZtunnelConnection): void {
    const i = this.conns.indexOf(conn);
    if (i < 0) return;
    this.conns.splice(i, 1);
    this.stats.dropped++;
    if (this.started && !this.closedFlag && this.conns.length < this.t.maxConnections && !this.resumeTimer) this.listener.resume();
    this.opts.log.info('ztunnel disconnected', { conn_uuid: conn.id, connected: this.conns.length });
    this.opts.onConnections?.(this.conns.length);
  }

  /** Sends the pod to the newest ztunnel with its netns and waits for the ack. */
  async podAdded(uid: string, workload: WorkloadInfo, netns: NetnsHandle): Promise<void> {
    const conn = this.conns[this.conns.length - 1];
    if (!conn) throw new ZdsError('no ztunnel connection', 'no-connection');
    await conn.send({ kind: 'add', uid, workload }, netns);
  }

  /** Tells every connected ztunnel to drop the pod; failures are joined. No connection is no error. */
  async podDeleted(uid: string): Promise<void> {
    const results = await Promise.allSettled(this.conns.map((c) => c.send({ kind: 'del', uid })));
    // As upstream, only failures to deliver count: what ztunnel answers to a Del is not checked.
    const errors = results
      .filter((r): r is PromiseRejectedResult => r.status === 'rejected' && !(r.reason instanceof ZdsError && r.reason.kind === 'ack'))
      .map((r) => (r.reason as Error).message);
    if (errors.length > 0) throw new ZdsError(`deleting ${uid} from ztunnel: ${errors.join('; ')}`, 'io');
  }

  /** Stops listening (the socket file is removed) and closes every connection. */
  close(): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    clearTimeout(this.resumeTimer);
    this.listener.close();
    for (const c of [...this.conns]) c.close('the agent is stopping', 'info');
  }
}
