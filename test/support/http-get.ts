// Free local ports and plain HTTP GETs for the tests and benchmarks that scrape the agent's
// health and metrics servers: one copy instead of one per file.
import * as http from 'node:http';
import * as net from 'node:net';

/** A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed). */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/**
 * GET `url`: its status and body. Rejects on a connection error, and after `timeoutMs` when given
 * (no timeout otherwise).
 */
export function httpGet(url: string, opts: { timeoutMs?: number } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, opts.timeoutMs === undefined ? {} : { timeout: opts.timeoutMs }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
  });
}
