// The listening side of the agent's HTTP servers (health, metrics, log.sock, pluginevent.sock).
// The agent accepts connections itself (the addon's accept4 on a libuv poll handle) and hands
// each to the http.Server as Node would (the 'connection' event), because Node's own listener
// cannot do what a server facing untrusted local clients needs:
//   - stop accepting at the connection cap (Node can only accept and close, and keeps polling);
//     here the listener pauses and newcomers wait in the kernel's backlog, holding no descriptor
//     of ours;
//   - check a unix socket's peer (SO_PEERCRED) before any byte of it is read: only root (or this
//     process's own uid) is served;
//   - create a unix socket 0600 from its bind, and refuse to replace anything but a socket.
// The http.Server itself enforces the header, request and keep-alive timeouts (HTTP_TIMEOUTS).
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { NativeFdWatcher, addon } from '../netns/addon';
import { bindUnixSocket, closeFd, peerCredentials } from '../netns/seqpacket';
import { HTTP_TIMEOUTS, ServerLimits } from './limits';

export type Endpoint = { readonly path: string } | { readonly host: string; readonly port: number };

export interface RefusalLog {
  warn(msg: string, fields?: Record<string, unknown>): void;
}

export interface Listening {
  server: http.Server;
  /** host:port (TCP) or the socket path. */
  address: string;
  /** The bound port (TCP; known even when 0 was asked for); 0 for a unix socket. */
  port: number;
  /** Connections being served now. */
  connections(): number;
  /** Connections refused for their peer's uid. */
  refused(): number;
  close(): Promise<void>;
}

/** The http.Server options every agent server uses: short timeouts, checked every second. */
export function httpServerOptions(): http.ServerOptions {
  return {
    headersTimeout: HTTP_TIMEOUTS.headersMs,
    requestTimeout: HTTP_TIMEOUTS.requestMs,
    keepAliveTimeout: HTTP_TIMEOUTS.keepAliveMs,
    connectionsCheckingInterval: HTTP_TIMEOUTS.checkIntervalMs,
  };
}

/** Peers a unix socket of the agent serves: root, and the agent's own uid (the same in production). */
export function servedUid(uid: number): boolean {
  return uid === 0 || uid === process.geteuid?.();
}

/** Logs refused peers at most once every 10 s (a refused client must not be able to flood the log). */
export function refusalLogger(log: RefusalLog | undefined, what: string): (uid: number, pid: number) => void {
  let last = 0;
  let since = 0;
  return (uid, pid) => {
    since++;
    const now = Date.now();
    if (!log || now - last < 10_000) return;
    log.warn(`refused a connection to ${what} from a process that is not root`, { uid, pid, refusedSinceLastReport: since });
    last = now;
    since = 0;
  };
}

const BACKLOG = 511;

/** Serves `server` at `at` under `limits`: the listener pauses at limits.maxConnections. */
export function serveHttp(server: http.Server, at: Endpoint, limits: Pick<ServerLimits, 'maxConnections'>, log?: RefusalLog): Listening {
  const unix = 'path' in at;
  const a = addon();
  const lfd = unix ? bindUnixSocket(at.path, () => a.unixStreamListen(at.path, BACKLOG)) : a.tcpListen(at.host, at.port, BACKLOG);
  let address: string;
  let port = 0;
  if (unix) {
    address = at.path;
  } else {
    const bound = a.localAddress(lfd);
    port = bound.port;
    address = `${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${port}`;
  }
  const open = new Set<net.Socket>();
  let refused = 0;
  let paused = false;
  let closed = false;
  const report = refusalLogger(log, address);
  // http.Server starts its timeout checks when it hears 'listening'.
  server.emit('listening');

  const onAcceptable = () => {
    while (!closed && open.size < limits.maxConnections) {
      const fd = a.acceptConnection(lfd);
      if (fd < 0) return;
      if (unix) {
        let cred: { uid: number; pid: number };
        try {
          cred = peerCredentials(fd);
        } catch {
          closeFd(fd);
          continue;
        }
        if (!servedUid(cred.uid)) {
          closeFd(fd);
          refused++;
          report(cred.uid, cred.pid);
          continue;
        }
      }
      const sock = new net.Socket({ fd, readable: true, writable: true });
      open.add(sock);
      sock.once('close', () => {
        open.delete(sock);
        if (paused && !closed && open.size < limits.maxConnections) {
          paused = false;
          watcher.start(true, false);
        }
      });
      server.emit('connection', sock);
    }
    if (!closed && open.size >= limits.maxConnections && !paused) {
      paused = true;
      watcher.stop();
    }
  };
  const watcher: NativeFdWatcher = new a.FdWatcher(lfd, (err) => {
    if (!err) onAcceptable();
  });
  watcher.start(true, false);

  return {
    server,
    address,
    port,
    connections: () => open.size,
    refused: () => refused,
    close: async () => {
      if (closed) return;
      closed = true;
      watcher.close();
      closeFd(lfd);
      if (unix) {
        try {
          if (fs.lstatSync(at.path).isSocket()) fs.unlinkSync(at.path);
        } catch {
          // already gone
        }
      }
      // Stops the server's timeout checks; the server was never listening itself.
      server.close(() => undefined);
      for (const s of open) s.destroy();
    },
  };
}
