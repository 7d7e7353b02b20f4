// Starting the repair controller from the agent's configuration (Istio: repair.StartRepair).
// agent.ts loads this module only when REPAIR_ENABLED is true.
import { SIDECAR_TABLE_REFS } from '../../capture/apply';
import { Logger } from '../../log/logger';
import { RestClient, inClusterRest } from '../../kube/rest';
import { realNetns, realRules } from '../../plugin/wiring';
import { AgentConfig } from '../config';
import { NodePods } from '../node-pods';
import { RepairController, RepairControllerDeps, RepairResult, RepairType, repairAction } from './controller';
import { PodRepairer, netnsRepairer, rtnlProbe } from './redirect';

export { RepairController, repairAction, repairApiRules } from './controller';

export interface RunningRepair {
  readonly controller: RepairController;
  /** Resolves once the first pod list is in. */
  readonly synced: Promise<void>;
  /** Stops watching and waits for the worker to finish the pod in hand. */
  stop(): Promise<void>;
}

export interface StartRepairDeps {
  log: Logger;
  count(type: RepairType, result: RepairResult): void;
  /** For tests: another API client than the in-cluster one. */
  api?: RestClient;
  /** The agent's shared watch of NODE_NAME's pods; used when repair looks at that node. */
  pods?: NodePods;
  /** For tests: another repairer than the netns one. */
  repairer?: PodRepairer;
  tuning?: Pick<RepairControllerDeps, 'informer' | 'queueBaseDelayMs'>;
}

/** The node whose pods are watched: REPAIR_NODE_NAME, else NODE_NAME (see docs/installer.md). */
export function repairNodeName(cfg: AgentConfig): string {
  return cfg.repair.nodeName || cfg.nodeName;
}

/** Throws when the API cannot be addressed (KUBERNETES_SERVICE_HOST/PORT unset). */
export function startRepair(cfg: AgentConfig, deps: StartRepairDeps): RunningRepair {
  const r = cfg.repair;
  const nodeName = repairNodeName(cfg);
  if (nodeName === '') {
    deps.log.warn('repair: neither REPAIR_NODE_NAME nor NODE_NAME is set; only pods with no node would be watched (field selector spec.nodeName=)');
  }
  const api = deps.api ?? inClusterRest(cfg.install);
  let repairer = deps.repairer;
  if (!repairer && repairAction(r) === 'repair') {
    // The plugin's own netns and rule wiring: the agent has loaded it already for its fast path.
    repairer = netnsRepairer({
      procRoot: r.hostProcDir,
      probe: rtnlProbe(),
      netns: realNetns(),
      rules: realRules(SIDECAR_TABLE_REFS),
      env: process.env,
      debug: (m) => deps.log.debug(m),
    });
  }
  // The shared watch serves repair only when it watches the node repair looks at.
  const pods = deps.pods && deps.pods.nodeName === nodeName ? deps.pods : undefined;
  const controller = new RepairController({ ...r, nodeName }, { api, log: deps.log, count: deps.count, repairer, pods, ...deps.tuning });
  deps.log.info('starting CNI sidecar repair controller', {
    action: controller.action,
    fieldSelector: controller.fieldSelector,
    watch: pods ? 'shared with the fast path and ambient' : 'own',
    labelSelector: r.labelSelectors || undefined,
  });
  if (controller.action === 'none') {
    deps.log.warn('repair: REPAIR_ENABLED is true but none of REPAIR_REPAIR_PODS, REPAIR_DELETE_PODS, REPAIR_LABEL_PODS is; broken pods are only watched');
  }
  const ac = new AbortController();
  const done = controller.run(ac.signal).catch((e) => deps.log.error('repair controller stopped', { error: String(e) }));
  controller.pods.synced.then(() => deps.log.info('repair controller: pod cache synced', { pods: controller.pods.list().length }));
  return {
    controller,
    synced: controller.pods.synced,
    async stop() {
      ac.abort();
      await done;
      api.close();
    },
  };
}
