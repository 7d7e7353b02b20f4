// The ambient node agent (Istio: nodeagent.NewServer / Start / Stop), as the plug-in agent.ts
// starts when AMBIENT_ENABLED is true:
//   start: host rule + probe sets (host netns), the ZDS socket (not accepting yet), pod and
//          namespace informers (wait for both lists), the CNI event server, the snapshot of pods
//          already enrolled (probe sets re-synced, netns found through /proc, in-pod rules
//          re-applied only in reconcile mode), then the event queue and ZDS accepts; ready.
//   stop:  the CNI event server and informers stop; unless an upgrade is under way the host
//          rule and probe sets are removed; the ZDS socket closes. In-pod rules stay, as upstream:
//          the pods keep being redirected to ztunnel.
import * as path from 'node:path';
import { buildInpodRules } from '../../ambient/build';
import { AmbientConfig, parseAmbientConfig, parseHostRuleParams } from '../../ambient/config';
import { PLUGIN_EVENT_SOCKET } from '../../ambient/cni-event';
import { findKubeletUid } from '../../ambient/kubelet-uid';
import { POD_TABLE_REFS } from '../../ambient/tables';
import { Logger } from '../../log/logger';
import { InformerOptions } from '../../kube/informer';
import { RestClient, inClusterRest, statusError } from '../../kube/rest';
import { AgentConfig } from '../config';
import { NodePods } from '../node-pods';
import { AmbientController } from './controller';
import { AnnotationValue, MeshDataplane, PodRules } from './dataplane';
import { CniEventServer, startCniEventServer } from './cni-event-server';
import { HostProbeSets, HostSetupRetry } from './host-probes';
import { HostSide, ambientHostSide } from '../host-side';
import { NetnsHandle } from '../../netns/handle';
import { DataplanePort, addonDataplane } from '../../netns/port';
import { ambientRoutePlan } from '../../netns/route-plan';
import { findPodNetns, netnsHoldsAnyAddress } from './proc-finder';
import { EnrolledPods } from './enrolled-pods';
import { REDIRECTION_ANNOTATION } from './pods';
import { Pod, podName, podNamespace } from '../../kube/pod';
import { ZdsTimeouts, ZtunnelServer } from './ztunnel-server';

export { AmbientController } from './controller';
export { MeshDataplane, NonRetryableAddError } from './dataplane';
export { ZtunnelServer } from './ztunnel-server';

export interface AmbientAgentDeps {
  /** The API; default the in-cluster service account. */
  api?: RestClient;
  /** The agent's shared watch of this node's pods; without it ambient watches them itself. */
  pods?: NodePods;
  /**
   * The node's netns, where the host rule and probe sets live; default from ALLOW_SWITCH_TO_HOST_NS
   * and HOST_NETNS (src/agent/host-side.ts), checked when the agent is created.
   */
  hostNetns?: string;
  /** Where the host's root is mounted: CNI netns paths are opened under it; default /host. */
  hostRoot?: string;
  /** The host's /proc; default <hostRoot>/proc. */
  procRoot?: string;
  /** kubelet's UID; default found in procRoot. */
  kubeletUid?: number;
  /** SYSTEM_NAMESPACE (where ztunnel runs); default the config's. */
  systemNamespace?: string;
  /** HOST_PROBE_SNAT_IP / _IPV6; default the config's. */
  probeSnat?: { v4?: string; v6?: string };
  /** Metrics (agent.ts's AgentMetrics). */
  metrics?: {
    pluginRequest?(code: number): void;
    reconcileEvent?(type: string): void;
    ztunnelConnections?(n: number): void;
  };
  /** For tests. */
  zdsTimeouts?: Partial<ZdsTimeouts>;
  informer?: Partial<InformerOptions>;
  retry?: { baseMs?: number; maxMs?: number; qps?: number; burst?: number };
  hostSetupRetry?: HostSetupRetry;
}

export interface RunningAmbient {
  start(): Promise<void>;
  stop(skipCleanup: boolean): Promise<void>;
  readonly ready: () => boolean;
  /** Available once start() resolved. */
  readonly parts: () => { dataplane: MeshDataplane; controller: AmbientController; zds: ZtunnelServer; hostSets: HostProbeSets; cache: EnrolledPods };
}

/**
 * The in-pod rules and mark routing, through the dataplane port (default: the addon and netlink)
 * in the pod's held netns: one transaction replacing the three istio-ambient-* tables, then the
 * routes. A removal that cannot delete the tables still takes the routes out.
 */
export function netnsPodRules(cfg: AmbientConfig, log: Logger, port: DataplanePort = addonDataplane(POD_TABLE_REFS)): PodRules {
  const routes = ambientRoutePlan(cfg.enableIPv6);
  return {
    async apply(netns, overrides) {
      await port.apply(netns, buildInpodRules(cfg, overrides));
      await port.setupRoutes(netns, routes);
    },
    async remove(netns) {
      await port.remove(netns, POD_TABLE_REFS).catch((e) => log.warn('in-pod tables not deleted', { error: (e as Error).message }));
      await port.removeRoutes(netns, routes);
    },
  };
}

/** JSON merge patch of the redirection annotation through the pod's status subresource. */
export function statusAnnotator(api: RestClient): (pod: Pod, value: AnnotationValue) => Promise<void> {
  return async (pod, value) => {
    const p = `/api/v1/namespaces/${encodeURIComponent(podNamespace(pod))}/pods/${encodeURIComponent(podName(pod))}/status`;
    const r = await api.request('PATCH', p, {
      body: { metadata: { annotations: { [REDIRECTION_ANNOTATION]: value } } },
      contentType: 'application/merge-patch+json',
    });
    if (r.status >= 200 && r.status < 300) return;
    if (r.status === 404 && value === null) return;
    throw statusError(`PATCH ${p}`, r);
  };
}

export function createAmbientAgent(cfg: AgentConfig, log: Logger, deps: AmbientAgentDeps = {}): RunningAmbient {
  // Decided now, before anything starts: a refusal or a missing mount writes nothing.
  const hostSide: HostSide = deps.hostNetns !== undefined ? { netns: deps.hostNetns, switched: false } : ambientHostSide(cfg);
  let hostHandle: NetnsHandle | undefined;
  let parts: ReturnType<RunningAmbient['parts']> | undefined;
  let cniServer: CniEventServer | undefined;
  let isReady = false;
  const ac = new AbortController();

  const start = async (): Promise<void> => {
    const amb = cfg.ambient;
    const ambientCfg = parseAmbientConfig({
      enableIPv6: amb.ipv6,
      redirectDNS: amb.dnsCapture,
      reconcile: amb.reconcilePodRulesOnStartup,
      hostProbeSNATAddress: deps.probeSnat?.v4 ?? amb.hostProbeSNATIP,
      hostProbeV6SNATAddress: deps.probeSnat?.v6 ?? amb.hostProbeSNATIPv6,
    });
    const hostRoot = deps.hostRoot ?? '/host';
    const procRoot = deps.procRoot ?? path.join(hostRoot, 'proc');
    // Held open for the agent's life: host rules go through this fd, whatever the path names later.
    hostHandle ??= NetnsHandle.open(hostSide.netns);
    const api = deps.api ?? inClusterRest(cfg.install);
    const kubeletUid = deps.kubeletUid ?? Number(findKubeletUid(procRoot));
    if (cfg.nodeName === '') log.warn('NODE_NAME is not set: only pods with no node would be watched (field selector spec.nodeName=)');
    log.info('ambient node agent starting', {
      hostNetns: hostSide.netns,
      switchedToHostNetns: hostSide.switched,
      procRoot,
      kubeletUid,
      ipv6: amb.ipv6,
      dnsCapture: amb.dnsCapture,
      zds: amb.ztunnelUDSAddress,
    });

    const hostSets = new HostProbeSets(
      ambientCfg,
      parseHostRuleParams({ kubeletUID: kubeletUid }),
      // The host's table is only changed in place (its sets keep their elements): no owned tables.
      addonDataplane([]),
      hostHandle,
      log,
    );
    await hostSets.setup(deps.hostSetupRetry);

    const cache = new EnrolledPods();
    const dataplane = new MeshDataplane({
      log,
      cache,
      rules: netnsPodRules(ambientCfg, log),
      hostSets,
      annotate: statusAnnotator(api),
      findNetns: (wanted) => findPodNetns(wanted, { procRoot, log, holdsAnyAddress: netnsHoldsAnyAddress }),
      hostRoot,
      reconcileOnStart: amb.reconcilePodRulesOnStartup,
    });
    const zds = ZtunnelServer.listen({
      path: amb.ztunnelUDSAddress,
      log,
      snapshot: () => cache.snapshot(),
      timeouts: deps.zdsTimeouts,
      onConnections: (n) => deps.metrics?.ztunnelConnections?.(n),
      paused: true,
    });
    dataplane.setZds(zds);
    const controller = new AmbientController({
      api,
      nodeName: cfg.nodeName,
      systemNamespace: deps.systemNamespace ?? amb.systemNamespace,
      selectors: amb.enablementSelectors,
      excludeNamespaces: cfg.install.excludeNamespaces ?? [],
      dataplane,
      log,
      onEvent: (t) => deps.metrics?.reconcileEvent?.(t),
      informer: deps.informer,
      pods: deps.pods,
      retry: deps.retry,
    });
    parts = { dataplane, controller, zds, hostSets, cache };

    await controller.startInformers(ac.signal);
    log.info('ambient informers synced');
    cniServer = await startCniEventServer(
      path.join(cfg.install.cniAgentRunDir, PLUGIN_EVENT_SOCKET),
      async (ev) => {
        const pod = await podWithRetry(controller, ev.podName, ev.podNamespace, ac.signal);
        await dataplane.addPodToMesh(
          pod,
          ev.ips.map((x) => x.address),
          ev.netns,
        );
      },
      log,
      (code) => deps.metrics?.pluginRequest?.(code),
    );
    const existing = controller.activeAmbientPodSnapshot();
    await dataplane.constructInitialSnapshot(existing).catch((e) => log.warn('failed to construct the initial snapshot', { error: (e as Error).message }));
    void controller.runQueue(ac.signal);
    zds.start();
    isReady = true;
    log.info('ambient node agent ready', { enrolledPods: existing.length });
  };

  const stop = async (skipCleanup: boolean): Promise<void> => {
    isReady = false;
    await cniServer?.close();
    ac.abort();
    if (!parts) {
      hostHandle?.release();
      hostHandle = undefined;
      return;
    }
    if (!skipCleanup) {
      log.info('ambient node agent stopping: removing the host rule and probe sets');
      await parts.hostSets.destroy().catch((e) => log.warn('host rule and probe sets not removed', { error: (e as Error).message }));
    }
    parts.zds.close();
    parts.cache.clear();
    hostHandle?.release();
    hostHandle = undefined;
  };

  return {
    start,
    stop,
    ready: () => isReady,
    parts: () => {
      if (!parts) throw new Error('the ambient agent has not started');
      return parts;
    },
  };
}

/** The pod from the informer cache, waiting up to 10 x 10 ms for it to appear (as upstream). */
async function podWithRetry(c: AmbientController, name: string, namespace: string, signal: AbortSignal): Promise<Pod> {
  let last: Error | undefined;
  for (let attempt = 0; attempt <= 10; attempt++) {
    if (signal.aborted) throw new Error('the agent is stopping');
    try {
      const pod = c.getPodIfAmbientEnabled(name, namespace);
      if (!pod) throw new Error(`pod ${namespace}/${name} is unexpectedly not eligible for ambient enrollment`);
      return pod;
    } catch (e) {
      last = e as Error;
      if (/not eligible/.test(last.message)) throw last;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`failed to get pod ${namespace}/${name}: ${last?.message}`);
}

/** The plug-in agent.ts takes (AgentDeps.ambient): the agent's metrics wired in. */
export function ambientAgentPlugin(
  cfg: AgentConfig,
  log: Logger & { withScope?(scope: string): Logger },
  metrics: {
    pluginRequests: { inc(labels: { response_code: string }): void };
    reconcileEvents: { inc(labels: { type: string }): void };
    ztunnelConnected: { set(n: number): void };
  },
  pods?: NodePods,
): RunningAmbient {
  return createAmbientAgent(cfg, log.withScope?.('ambient') ?? log, {
    pods,
    metrics: {
      pluginRequest: (code) => metrics.pluginRequests.inc({ response_code: String(code) }),
      reconcileEvent: (type) => metrics.reconcileEvents.inc({ type }),
      ztunnelConnections: (n) => metrics.ztunnelConnected.set(n),
    },
  });
}
