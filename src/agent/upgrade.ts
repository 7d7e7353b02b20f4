// Whether a terminating agent is being replaced (upgrade, node reboot) rather than removed, as
// Istio's Server.ShouldStopCleanup decides it for ambient mode: while our DaemonSet still exists,
// is not being deleted and still schedules onto this node, the plugin and its config stay in
// place so that new ambient pods wait for the next agent instead of starting un-captured.
import { InstallConfig } from '../installer/config';
import { Logger } from '../log/logger';
import { sleep } from '../installer/watcher';
import { inClusterRest } from '../kube/rest';

export interface ApiResponse {
  status: number;
  body: unknown;
}

/** The one Kubernetes call shape this needs: GET a path, JSON back. */
export interface KubeGet {
  get(apiPath: string): Promise<ApiResponse>;
}

/** In-cluster access with the agent's service account, over the one transport. */
export function inClusterApi(cfg: InstallConfig, timeoutMs = 5000): KubeGet {
  return {
    async get(apiPath: string): Promise<ApiResponse> {
      const rest = inClusterRest(cfg, { timeoutMs }); // throws (here, not at construction) without KUBERNETES_SERVICE_*
      try {
        return await rest.request('GET', apiPath);
      } finally {
        rest.close(); // asked once, at shutdown: keep no connection open
      }
    },
  };
}

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj | undefined => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Obj) : undefined);
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

/** A NodeSelectorRequirement against a label (or field) value. Throws on a malformed requirement. */
function requirementMatches(req: Obj, value: string | undefined, fieldMode: boolean): boolean {
  const op = req.operator;
  const values = list(req.values).map(String);
  switch (op) {
    case 'In':
      return value !== undefined && values.includes(value);
    case 'NotIn':
      return value === undefined || !values.includes(value);
    case 'Exists':
      if (fieldMode) break;
      return value !== undefined;
    case 'DoesNotExist':
      if (fieldMode) break;
      return value === undefined;
    case 'Gt':
    case 'Lt': {
      if (fieldMode || values.length !== 1 || !/^-?\d+$/.test(values[0])) break;
      if (value === undefined || !/^-?\d+$/.test(value)) return false;
      const [a, b] = [BigInt(value), BigInt(values[0])];
      return op === 'Gt' ? a > b : a < b;
    }
  }
  throw new Error(`invalid node selector requirement ${JSON.stringify(req)}`);
}

/** Kubernetes' required node affinity: terms are ORed, requirements within a term ANDed. */
export function nodeSelectorMatches(selector: unknown, node: unknown): boolean {
  const labels = (obj(obj(obj(node)?.metadata)?.labels) ?? {}) as Record<string, string>;
  const name = String(obj(obj(node)?.metadata)?.name ?? '');
  return list(obj(selector)?.nodeSelectorTerms).some((t) => {
    const term = obj(t) ?? {};
    const exprs = list(term.matchExpressions).map((r) => obj(r) ?? {});
    const fields = list(term.matchFields).map((r) => obj(r) ?? {});
    if (exprs.length === 0 && fields.length === 0) return false;
    return (
      exprs.every((r) => requirementMatches(r, Object.prototype.hasOwnProperty.call(labels, String(r.key)) ? labels[String(r.key)] : undefined, false)) &&
      fields.every((r) => {
        if (r.key !== 'metadata.name') throw new Error(`unsupported node field selector ${String(r.key)}`);
        return requirementMatches(r, name, true);
      })
    );
  });
}

export interface UpgradeCheck {
  api: KubeGet;
  namespace: string;
  nodeName: string;
  istioOwnedCNIConfig: boolean;
  log: Logger;
  daemonSetName?: string;
  retryDelayMs?: number;
}

/** True when cleanup should be skipped (we are being upgraded or the node is rebooting). */
export async function shouldStopCleanup(c: UpgradeCheck): Promise<boolean> {
  const ds = c.daemonSetName ?? 'istio-cni-node';
  // Upstream: one attempt defaulting to "clean up"; with an Istio-owned config, three attempts
  // defaulting to "keep" (removing our own file is harmless to keep, fatal to lose mid-upgrade).
  const fallback = c.istioOwnedCNIConfig;
  const attempts = c.istioOwnedCNIConfig ? 3 : 1;
  let lastErr: unknown;
  for (let i = 0; i < attempts; i++) {
    if (i > 0) await sleep(c.retryDelayMs ?? 1000);
    try {
      const r = await c.api.get(`/apis/apps/v1/namespaces/${encodeURIComponent(c.namespace)}/daemonsets/${encodeURIComponent(ds)}`);
      const deleting = r.status === 200 && obj(obj(r.body)?.metadata)?.deletionTimestamp != null;
      if (r.status === 200 && !deleting) {
        const n = await c.api.get(`/api/v1/nodes/${encodeURIComponent(c.nodeName)}`);
        if (n.status !== 200) throw new Error(`get node ${c.nodeName}: HTTP ${n.status}`);
        const affinity = obj(obj(obj(obj(obj(obj(r.body)?.spec)?.template)?.spec)?.affinity)?.nodeAffinity)?.requiredDuringSchedulingIgnoredDuringExecution;
        if (affinity != null && !nodeSelectorMatches(affinity, n.body)) {
          c.log.info(`terminating, and parent DaemonSet ${ds} will not schedule to node ${c.nodeName} due to node affinity; shutting down normally`);
          return false;
        }
        c.log.info(`terminating, but parent DaemonSet ${ds} is still present; this is an upgrade or a node reboot, leaving the plugin in place`);
        return true;
      }
      if (r.status === 404 || deleting) {
        c.log.info(`parent DaemonSet ${ds} is not found or marked for deletion; this is not an upgrade, shutting down normally`);
        return false;
      }
      if (r.status === 401) {
        c.log.info(`permission to get parent DaemonSet ${ds} has been revoked; this is not an upgrade, shutting down normally`);
        return false;
      }
      throw new Error(`get DaemonSet ${ds}: HTTP ${r.status}`);
    } catch (e) {
      lastErr = e;
      c.log.info(`failed to get parent DaemonSet ${ds}: ${(e as Error).message}`);
    }
  }
  c.log.info(`could not decide whether this is an upgrade; ${fallback ? 'keeping' : 'removing'} the plugin`, { error: String(lastErr) });
  return fallback;
}
