// The agent's end of the plugin's ambient ADD event (Istio: cni-watcher.go): HTTP over the unix
// socket `<CNI_AGENT_RUN_DIR>/pluginevent.sock`, `POST /cmdadd` with the JSON body of
// src/ambient/cni-event.ts. 400 for an empty or undecodable body, 500 with the error text when
// the pod cannot be enrolled, 200 once it is enrolled and ztunnel has acked.
//
// The socket is root-only (0600 from its creation in a 0750 directory, and only root peers are
// served; upstream makes it 0666): the plugin runs as root, and nothing else on the node should
// be able to ask the agent to open a netns path. Connections and buffered bodies are capped
// (LIMITS.pluginEvent), requests have deadlines (src/agent/listener.ts).
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { CNI_ADD_EVENT_PATH, CniAddEvent, CniEventError, parseCniAddEvent } from '../../ambient/cni-event';
import { Logger } from '../../log/logger';
import { ByteBudget, LIMITS, readBody } from '../limits';
import { httpServerOptions, serveHttp } from '../listener';

/** Largest body read (the plugin's events are a few hundred bytes). */
const MAX_BODY = 1 << 20;

export interface CniEventServer {
  readonly socketPath: string;
  close(): Promise<void>;
}

export type CniAddHandler = (ev: CniAddEvent) => Promise<void>;

export function startCniEventServer(
  socketPath: string,
  handle: CniAddHandler,
  log: Logger,
  onResponse: (code: number) => void = () => {},
): Promise<CniEventServer> {
  const answer = (res: http.ServerResponse, code: number, body = '') => {
    onResponse(code);
    res.writeHead(code, { 'content-type': 'text/plain; charset=utf-8' }).end(body === '' ? '' : `${body}\n`);
  };
  const budget = new ByteBudget(LIMITS.pluginEvent.maxBufferedBytes);
  const server = http.createServer(httpServerOptions(), (req, res) => {
    const url = (req.url ?? '').split('?')[0];
    if (url !== CNI_ADD_EVENT_PATH) return answer(res, 404, `no handler for ${url}`);
    if (req.method !== 'POST') return answer(res, 405, 'POST only');
    readBody(req, MAX_BODY, budget, (body) => {
      if ('refused' in body) {
        if (body.refused === 'too-large') return answer(res, 400, `request body larger than ${MAX_BODY} bytes`);
        return answer(res, 503, `the agent already buffers ${budget.max} bytes of events; try again`);
      }
      let ev: CniAddEvent;
      try {
        ev = parseCniAddEvent(body.text);
      } catch (e) {
        log.error('failed to process CNI event payload', { error: (e as Error).message });
        return answer(res, 400, (e as CniEventError).message);
      }
      handle(ev).then(
        () => answer(res, 200),
        (e) => {
          log.error('failed to handle add event', { pod: `${ev.podNamespace}/${ev.podName}`, error: (e as Error).message });
          answer(res, 500, (e as Error).message);
        },
      );
    });
    req.on('error', () => undefined);
  });
  return new Promise((resolve, reject) => {
    let listening: ReturnType<typeof serveHttp>;
    try {
      fs.mkdirSync(path.dirname(socketPath), { recursive: true, mode: 0o750 });
      listening = serveHttp(server, { path: socketPath }, LIMITS.pluginEvent, log);
    } catch (e) {
      reject(e);
      return;
    }
    log.info('listening for CNI plugin events', { socket: socketPath });
    resolve({ socketPath, close: () => listening.close() });
  });
}
