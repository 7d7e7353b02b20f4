// What Istio's istio-validation init container checks: a connection to 127.0.0.6:<probe port>
// (::6 on IPv6) must be redirected to the proxy's listeners and arrive with that original
// destination. Listeners on 127.0.0.1 (::1) at the proxy and inbound capture ports stand in
// for Envoy; the client retries every second until the timeout.
import * as net from 'node:net';
import { getOriginalDst } from '../netns/nft';

export interface ValidationConfig {
  readonly ipv6: boolean;
  readonly listenPorts: readonly number[];
  readonly probePort: number;
  readonly timeoutMs: number;
}

export type ValidationResult = { ok: true } | { ok: false; reason: string };

/** Exit code of a failed validation, as Istio's repair controller expects. */
export const VALIDATION_FAILED_EXIT = 126;

function socketFd(s: net.Socket): number {
  const fd = (s as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('accepted socket has no file descriptor');
  return fd;
}

export async function validateRedirection(cfg: ValidationConfig): Promise<ValidationResult> {
  const listenHost = cfg.ipv6 ? '::1' : '127.0.0.1';
  const probeHost = cfg.ipv6 ? '::6' : '127.0.0.6';
  const servers: net.Server[] = [];
  let timer: NodeJS.Timeout | undefined;
  let retry: NodeJS.Timeout | undefined;
  try {
    return await new Promise<ValidationResult>((resolve) => {
      const onConnection = (conn: net.Socket) => {
        try {
          const dst = getOriginalDst(socketFd(conn));
          conn.end(String(dst.port));
          if (dst.port === cfg.probePort) resolve({ ok: true });
        } catch {
          conn.destroy(); // not a redirected connection: no original destination
        }
      };
      let listening = 0;
      const failed: string[] = [];
      const startClient = () => {
        const attempt = () => {
          const c = net.connect({ host: probeHost, port: cfg.probePort, localAddress: listenHost });
          c.on('error', () => c.destroy());
          c.on('data', () => c.end());
          retry = setTimeout(attempt, 1000);
        };
        attempt();
      };
      for (const port of cfg.listenPorts) {
        const srv = net.createServer(onConnection);
        servers.push(srv);
        srv.on('error', (e) => {
          failed.push(`${listenHost}:${port}: ${e.message}`);
          if (failed.length === cfg.listenPorts.length) resolve({ ok: false, reason: `no listener available: ${failed.join(', ')}` });
        });
        srv.listen({ host: listenHost, port }, () => {
          if (++listening === 1) startClient();
        });
      }
      timer = setTimeout(() => resolve({ ok: false, reason: `validation timeout after ${cfg.timeoutMs} ms` }), cfg.timeoutMs);
    });
  } finally {
    clearTimeout(timer);
    clearTimeout(retry);
    for (const s of servers) s.close();
  }
}
