// Forwarding the plugin's log lines to the node agent, as Istio's plugin does: at the end of the
// run, one HTTP POST to /log over the unix socket <cni_agent_run_dir>/log.sock whose body is a
// JSON array of the encoded lines (strings). The whole request gets one second. The plugin never
// waits longer on its logs, and a failure changes nothing about the CNI result.
import * as http from 'node:http';

export const LOG_SOCKET = 'log.sock';
export const LOG_HTTP_PATH = '/log';
export const LOG_POST_TIMEOUT_MS = 1000;

/** Resolves with undefined when the agent answered 200, else with what went wrong; never rejects. */
export function postLogLines(socketPath: string, lines: readonly string[], timeoutMs = LOG_POST_TIMEOUT_MS): Promise<Error | undefined> {
  const body = Buffer.from(JSON.stringify(lines), 'utf8');
  return new Promise((resolve) => {
    let settled = false;
    const done = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(err);
    };
    const req = http.request(
      {
        socketPath,
        path: LOG_HTTP_PATH,
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'Content-Length': body.length, Host: 'unix' },
        agent: false,
      },
      (res) => {
        res.resume();
        res.on('end', () => done(res.statusCode === 200 ? undefined : new Error(`log server answered HTTP ${res.statusCode}`)));
        res.on('error', (e) => done(e));
      },
    );
    const timer = setTimeout(() => {
      done(new Error(`no answer from ${socketPath} within ${timeoutMs} ms`));
      req.destroy();
    }, timeoutMs);
    req.on('error', (e) => done(e));
    req.end(body);
  });
}
