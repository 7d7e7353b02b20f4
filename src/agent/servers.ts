// The agent's HTTP endpoints: health/readiness (Istio: :8000 /healthz, /readyz) and Prometheus
// metrics (MONITORING_PORT, /metrics), with Istio's metric names.
import * as http from 'node:http';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { LIMITS, ServerLimits } from './limits';
import { Listening, RefusalLog, httpServerOptions, serveHttp } from './listener';

export type { Listening } from './listener';

/** Listens on host:port ('' = every interface) with `limits` (src/agent/limits.ts). */
export async function listen(server: http.Server, port: number, host: string, limits: ServerLimits, log?: RefusalLog): Promise<Listening> {
  return serveHttp(server, { host, port }, limits, log);
}

/** /healthz is always 200 (the process is up); /readyz is 200 only while `ready()` holds. */
export function startHealthServer(ready: () => boolean, port: number, host: string): Promise<Listening> {
  const server = http.createServer(httpServerOptions(), (req, res) => {
    const url = (req.url ?? '').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405).end();
    } else if (url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (url === '/readyz') {
      const ok = ready();
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ready\n' : 'not ready\n');
    } else {
      res.writeHead(404).end();
    }
  });
  return listen(server, port, host, LIMITS.health);
}

export class AgentMetrics {
  readonly registry = new Registry();
  readonly installs = new Counter({
    name: 'istio_cni_installs_total',
    help: 'Total number of CNI plugins installed by the Istio CNI installer',
    labelNames: ['result'],
    registers: [this.registry],
  });
  readonly installReady = new Gauge({
    name: 'istio_cni_install_ready',
    help: 'Whether the CNI plugin installation is ready or not',
    registers: [this.registry],
  });
  readonly podsRepaired = new Counter({
    name: 'istio_cni_repair_pods_repaired_total',
    help: 'Total number of pods repaired by repair controller',
    labelNames: ['type', 'result'],
    registers: [this.registry],
  });
  readonly pluginRequests = new Counter({
    name: 'istio_cni_plugin_requests_total',
    help: 'Total number of requests from the CNI plugin to the node agent',
    labelNames: ['response_code'],
    registers: [this.registry],
  });
  readonly reconcileEvents = new Counter({
    name: 'nodeagent_reconcile_events_total',
    help: 'The total number of node agent reconcile events',
    labelNames: ['type'],
    registers: [this.registry],
  });
  readonly podCacheLookups = new Counter({
    name: 'istio_cni_ts_fast_path_pod_lookups_total',
    help: "Fast path pod lookups, by whether this node's pod cache answered (hit) or the API was asked (miss)",
    labelNames: ['result'],
    registers: [this.registry],
  });
  readonly logLinesDropped = new Counter({
    name: 'istio_cni_ts_log_lines_dropped_total',
    help: 'CNI plugin log lines received on log.sock and dropped (unparsable, too_large, too_deep, unreadable, report_too_large)',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  readonly ztunnelConnected = new Gauge({
    name: 'ztunnel_connected',
    help: 'number of connections to ztunnel',
    registers: [this.registry],
  });

  constructor(defaultMetrics = true) {
    this.installReady.set(0);
    if (defaultMetrics) collectDefaultMetrics({ register: this.registry });
  }

  start(port: number, host: string): Promise<Listening> {
    const server = http.createServer(httpServerOptions(), (req, res) => {
      const url = (req.url ?? '').split('?')[0];
      if (url !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
        res.writeHead(404).end();
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (err) => res.writeHead(500).end(String(err)),
      );
    });
    return listen(server, port, host, LIMITS.metrics);
  }
}
