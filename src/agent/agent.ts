// The node agent process (Istio's install-cni root command): servers, then the install loop;
// on stop, cleanup unless this is an upgrade.
import * as path from 'node:path';
import { Installer } from '../installer/installer';
import { InputError } from '../values/errors';
import { CniServer, SHIM_SOCKET_NAME, startCniServer } from './cni-server';
import { AgentConfig, describeConfig } from './config';
import { ScopedLogger } from '../log/scoped';
import { LOG_SOCKET_NAME, LogServer, startLogServer } from './logserver';
import { AgentMetrics, Listening, startHealthServer } from './servers';
import { checkHostPaths } from './host-side';
import type { RunningRepair, StartRepairDeps } from './repair';
import { NodePodCache } from './pod-cache';
import { NodePods, NodePodsTuning } from './node-pods';
import { RestClient, inClusterRest } from '../kube/rest';
import { KubeGet, inClusterApi, shouldStopCleanup } from './upgrade';

/** The ambient node agent (CNI event server, pod enrollment, ZDS), when this build has one. */
export interface AmbientAgent {
  /** Resolves once the agent can answer plugin events. */
  start(): Promise<void>;
  /** `skipCleanup`: an upgrade is in progress; leave pod and host rules in place. */
  stop(skipCleanup: boolean): Promise<void>;
}

export interface AgentDeps {
  log: ScopedLogger;
  /** `pods`: the agent's shared watch of the node's pods, for the ambient controller. */
  ambient?: (cfg: AgentConfig, log: ScopedLogger, metrics: AgentMetrics, pods?: NodePods) => AmbientAgent | Promise<AmbientAgent>;
  kube?: KubeGet;
  /** For tests: install-loop timings. */
  installer?: { pollMs?: number; resyncMs?: number; retryMinMs?: number; retryMaxMs?: number };
  /** For tests: the repair controller's API client, pod repairer and timings. */
  repair?: Pick<StartRepairDeps, 'api' | 'repairer' | 'tuning'>;
  /** For tests: the API client and tuning of the shared watch of the node's pods (default: in-cluster). */
  podsApi?: RestClient;
  podsTuning?: NodePodsTuning;
}

export interface RunningAgent {
  readonly health: Listening;
  readonly metrics?: Listening;
  readonly logServer: LogServer;
  /** The CNI fast path: the shim's requests answered in this process (docs/payload.md). */
  readonly cniServer: CniServer;
  readonly installer: Installer;
  /** The repair controller, when REPAIR_ENABLED. */
  readonly repair?: RunningRepair;
  /** This node's pods for the fast path, when FAST_PATH_POD_CACHE and NODE_NAME allow it. */
  readonly podCache?: NodePodCache;
  /** The one list+watch of the node's pods, shared by the fast path, repair and ambient. */
  readonly nodePods?: NodePods;
  ready(): boolean;
  /** Stops the install loop, cleans up (unless upgrading), closes servers. */
  stop(): Promise<void>;
  /** Settles when the install loop ends (rejects if it failed unexpectedly). */
  readonly done: Promise<void>;
}

export async function startAgent(cfg: AgentConfig, deps: AgentDeps): Promise<RunningAgent> {
  const log = deps.log.withScope('cni-agent');
  log.info('CNI node agent configuration', describeConfig(cfg));
  if (cfg.ignored.length > 0) log.warn('these variables are accepted for compatibility and ignored', { names: cfg.ignored.join(',') });
  if (cfg.repair.enabled && !deps.repair?.api) {
    // As upstream, the repair controller cannot start without the API's address: say so before
    // anything listens.
    for (const [v, value] of [
      ['KUBERNETES_SERVICE_HOST', cfg.install.k8sServiceHost],
      ['KUBERNETES_SERVICE_PORT', cfg.install.k8sServicePort],
    ]) {
      if (!value) throw new InputError(v, value, 'must be set when REPAIR_ENABLED is true (the repair controller watches pods)');
    }
  }

  // Host mounts, then the ambient agent object (which checks its own host side), before anything
  // listens or is written: a missing mount is one message and nothing half-installed.
  checkHostPaths(cfg);
  const metrics = new AgentMetrics();
  const nodePods = startNodePods(cfg, deps, log);
  const ambient = cfg.ambient.enabled && deps.ambient ? await deps.ambient(cfg, deps.log, metrics, nodePods) : undefined;
  let metricsServer: Listening | undefined;
  if (cfg.monitoringPort > 0) {
    metricsServer = await metrics.start(cfg.monitoringPort, cfg.listenAddress);
    log.info('metrics server listening', { address: metricsServer.address, path: '/metrics' });
  }

  const logServer = await startLogServer(path.join(cfg.install.cniAgentRunDir, LOG_SOCKET_NAME), deps.log.withScope('cni-plugin'), log, (reason, lines) =>
    metrics.logLinesDropped.inc({ reason }, lines),
  );

  const podCache = startPodCache(cfg, nodePods, log, metrics);
  const cniServer = await startCniServer(path.join(cfg.install.cniAgentRunDir, SHIM_SOCKET_NAME), {
    pluginLog: deps.log.withScope('cni-plugin'),
    agentLog: log,
    pods: podCache,
  });

  let installReady = false;
  let watchReady = false;
  const health = await startHealthServer(() => installReady && watchReady, cfg.healthPort, cfg.listenAddress);
  log.info('health server listening', { address: health.address });

  const installer = new Installer(cfg.install, {
    log,
    ...deps.installer,
    observer: {
      installResult: (result) => metrics.installs.inc({ result }),
      ready: (r) => {
        installReady = r;
        metrics.installReady.set(r ? 1 : 0);
      },
    },
  });

  if (cfg.ambient.enabled) {
    if (ambient) {
      await ambient.start();
      watchReady = true;
      log.info('ambient node agent started, starting installer');
    } else {
      log.error('AMBIENT_ENABLED is true but this build has no ambient node agent; /readyz stays not ready');
    }
  } else {
    // Without ambient there is no event server to wait for.
    watchReady = true;
  }

  // Upstream starts the repair controller here and waits for its first pod list before
  // installing; here the list runs alongside the install (see docs/installer.md).
  let repair: RunningRepair | undefined;
  if (cfg.repair.enabled) {
    // Loaded only when enabled: the informer and, in repair mode, the netns code.
    const { startRepair } = await import('./repair');
    repair = startRepair(cfg, {
      log: deps.log.withScope('repair'),
      count: (type, result) => metrics.podsRepaired.inc({ type, result }),
      pods: nodePods,
      ...deps.repair,
    });
  } else {
    log.info('CNI repair controller is disabled');
  }

  const ac = new AbortController();
  log.info('initialization complete, watching node CNI dir');
  const done = installer.run(ac.signal);
  done.catch((e) => log.error('installer failed', { error: String(e) }));

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      ac.abort(new Error('agent stopping'));
      await Promise.all([done.catch(() => undefined), repair?.stop()]);
      let skipCleanup = false;
      if (cfg.ambient.enabled) {
        if (cfg.ambient.disableSafeUpgrade) {
          log.info('ambient node agent safe upgrade explicitly disabled via env');
        } else {
          skipCleanup = await shouldStopCleanup({
            api: deps.kube ?? inClusterApi(cfg.install),
            namespace: cfg.install.podNamespace,
            nodeName: cfg.nodeName,
            istioOwnedCNIConfig: cfg.install.istioOwnedCNIConfig,
            log,
          });
        }
        log.info(`ambient node agent shutting down - should stop cleanup? ${skipCleanup}`);
      } else {
        log.info('CNI node agent shutting down');
      }
      if (!skipCleanup) {
        await installer.cleanup().catch((e) => log.error(`cleanup failed: ${(e as Error).message}`));
      }
      await ambient?.stop(skipCleanup).catch((e) => log.error(`ambient agent stop failed: ${(e as Error).message}`));
      watchReady = false;
      await Promise.all([health.close(), metricsServer?.close(), logServer.close(), cniServer.close(), nodePods?.stop()]);
      log.info('CNI node agent stopped');
    })();
    return stopping;
  };

  return {
    health,
    metrics: metricsServer,
    logServer,
    cniServer,
    installer,
    repair,
    podCache,
    nodePods,
    ready: () => installReady && watchReady,
    stop,
    done,
  };
}

/**
 * The one watch of NODE_NAME's pods, started here when a consumer needs it: the fast path's cache,
 * repair (when it looks at that node) or ambient; undefined without the API's address.
 */
function startNodePods(cfg: AgentConfig, deps: AgentDeps, log: ScopedLogger): NodePods | undefined {
  const users = [
    cfg.podCache && cfg.nodeName ? 'fast path' : '',
    cfg.repair.enabled && (cfg.repair.nodeName || cfg.nodeName) === cfg.nodeName ? 'repair' : '',
    cfg.ambient.enabled && deps.ambient ? 'ambient' : '',
  ].filter((u) => u !== '');
  if (users.length === 0) return undefined;
  if (!deps.podsApi && !(cfg.install.k8sServiceHost && cfg.install.k8sServicePort)) {
    log.info("no watch of the node's pods: KUBERNETES_SERVICE_HOST/PORT is not set");
    return undefined;
  }
  const pods = new NodePods(deps.podsApi ?? inClusterRest(cfg.install), cfg.nodeName, log.withScope('node-pods'), deps.podsTuning).start();
  log.info("watching the node's pods (one list+watch, shared)", { node: cfg.nodeName, users: users.join(',') });
  pods.informer.synced.then(() => log.info('node pods synced', { node: cfg.nodeName, pods: pods.informer.list().length }));
  return pods;
}

/** The fast path's pod cache, or undefined (with the reason logged) when it cannot run. */
function startPodCache(cfg: AgentConfig, pods: NodePods | undefined, log: ScopedLogger, metrics: AgentMetrics): NodePodCache | undefined {
  if (!cfg.podCache) {
    log.info('fast path pod cache disabled (FAST_PATH_POD_CACHE=false): every ADD GETs its pod');
    return undefined;
  }
  const missing = !cfg.nodeName ? 'NODE_NAME' : !pods ? 'KUBERNETES_SERVICE_HOST/PORT' : '';
  if (missing || !pods) {
    log.info(`fast path pod cache off: ${missing} is not set; every ADD GETs its pod`);
    return undefined;
  }
  return new NodePodCache(pods.subscribe(), (result) => metrics.podCacheLookups.inc({ result }));
}
