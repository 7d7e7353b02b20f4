// Fake dependencies for the CNI handler: a pod API, netns states, an nft that keeps state, a
// clock that does not wait, and a log that records.
import { FakeKubeClient } from '../../src/kube/fake';
import { KubeClient } from '../../src/kube/client';
import { Pod } from '../../src/kube/pod';
import { SIDECAR_TABLE_REFS } from '../../src/capture/apply';
import { FakeDataplane, FakeNetns } from '../../src/netns/fake-port';
import { NetnsState, PluginDeps } from '../../src/plugin/ports';

export interface LogEntry {
  level: string;
  msg: string;
  fields?: Record<string, unknown>;
}

/** The sidecar fake port (src/netns/fake-port.ts) owning the three sidecar tables. */
export class FakeRules extends FakeDataplane {
  constructor() {
    super(SIDECAR_TABLE_REFS);
  }
}

export interface Fakes {
  deps: PluginDeps;
  kube: FakeKubeClient;
  rules: FakeRules;
  logs: LogEntry[];
  sleeps: number[];
  netns: Map<string, NetnsState>;
  dualStack: Set<string>;
  kubeRunDirs: string[];
  /** Every netns handle the handler opened (each must be released by the end of its request). */
  handles: FakeNetns[];
  /** Make deps.kube() reject (kubeconfig missing). */
  kubeconfigError?: Error;
}

export function fakes(pods: Pod[] = [], opts: { env?: Record<string, string> } = {}): Fakes {
  const kube = new FakeKubeClient(pods);
  const rules = new FakeRules();
  const logs: LogEntry[] = [];
  const sleeps: number[] = [];
  const netns = new Map<string, NetnsState>([['/var/run/netns/pod', 'ok']]);
  const dualStack = new Set<string>();
  const kubeRunDirs: string[] = [];
  const handles: FakeNetns[] = [];
  let clock = 0;
  const f: Fakes = { deps: undefined as unknown as PluginDeps, kube, rules, logs, sleeps, netns, dualStack, kubeRunDirs, handles };
  const rec = (level: string) => (msg: string, fields?: Record<string, unknown>) => logs.push({ level, msg, fields });
  f.deps = {
    kube: async (dir: string): Promise<KubeClient> => {
      kubeRunDirs.push(dir);
      if (f.kubeconfigError) throw f.kubeconfigError;
      return kube;
    },
    netns: {
      open: async (p) => {
        const state = netns.get(p) ?? 'missing';
        if (state !== 'ok') return { state };
        const h = new FakeNetns(p);
        handles.push(h);
        return { state, netns: h };
      },
      isDualStack: async (ns) => dualStack.has(ns.source),
      stillNamed: async (p) => netns.get(p) === 'ok',
    },
    rules,
    // Not ambient unless a test installs a branch that says otherwise.
    ambient: { add: async () => 'not-ambient' },
    log: { debug: rec('debug'), info: rec('info'), warn: rec('warn'), error: rec('error') },
    sleep: async (ms) => {
      sleeps.push(ms);
      clock += ms;
    },
    now: () => clock,
    env: opts.env ?? {},
  };
  return f;
}

/** A sidecar-injected pod as the injector leaves it (the shape the plugin-dryrun cases use). */
export function sidecarPod(
  over: {
    name?: string;
    namespace?: string;
    annotations?: Record<string, string>;
    labels?: Record<string, string>;
    env?: { name: string; value?: string }[];
    securityContext?: { runAsUser?: number; runAsGroup?: number };
    args?: string[];
    initContainers?: string[];
    proxyAsInit?: boolean;
  } = {},
): Pod {
  const proxy = {
    name: 'istio-proxy',
    args: over.args ?? ['proxy', 'sidecar'],
    env: over.env ?? [],
    securityContext: over.securityContext ?? {},
  };
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: over.name ?? 'web-1',
      namespace: over.namespace ?? 'shop',
      labels: over.labels ?? {},
      annotations: { 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}', ...over.annotations },
    },
    spec: {
      initContainers: [...(over.initContainers ?? []).map((name) => ({ name })), ...(over.proxyAsInit ? [proxy] : [])],
      containers: [{ name: 'app' }, ...(over.proxyAsInit ? [] : [proxy])],
    },
  };
}

export const POD_NETNS = '/var/run/netns/pod';

/** The environment a runtime gives the plugin for ADD/DEL/CHECK. */
export function cniEnv(command: string, over: Record<string, string | undefined> = {}): Record<string, string> {
  const env: Record<string, string | undefined> = {
    CNI_COMMAND: command,
    CNI_CONTAINERID: 'c0ffee',
    CNI_NETNS: POD_NETNS,
    CNI_IFNAME: 'eth0',
    CNI_PATH: '/opt/cni/bin',
    CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=u-1',
    ...over,
  };
  return Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined)) as Record<string, string>;
}

/** The same for `pod`'s container `ctr-<name>` in `netns`, as kubelet's runtime names them. */
export function podCniEnv(command: string, netns: string, pod: { namespace: string; name: string }, over: Record<string, string> = {}): Record<string, string> {
  return cniEnv(command, {
    CNI_CONTAINERID: `ctr-${pod.name}`,
    CNI_NETNS: netns,
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name};K8S_POD_INFRA_CONTAINER_ID=ctr-${pod.name};K8S_POD_UID=uid-${pod.name}`,
    ...over,
  });
}

/**
 * The network config a runtime hands our plugin as Istio's chained entry (debug logs, kube-system
 * excluded) with the previous plugin's result; `over` adds or replaces keys.
 */
export function pluginConf(runDir: string, prevResult: unknown, over: Record<string, unknown> = {}): string {
  return JSON.stringify({
    cniVersion: '1.0.0',
    name: 'k8s-pod-network',
    type: 'istio-cni',
    plugin_log_level: 'debug',
    cni_agent_run_dir: runDir,
    exclude_namespaces: ['kube-system'],
    pod_namespace: 'istio-system',
    prevResult,
    ...over,
  });
}

/** The whole entry install-cni writes (info logs, ambient off, native nftables) for the pod in POD_NETNS. */
export function netconf(over: Record<string, unknown> = {}): string {
  const prevResult = {
    cniVersion: '1.0.0',
    interfaces: [{ name: 'eth0', sandbox: POD_NETNS }],
    ips: [{ address: '10.0.0.2/24', gateway: '10.0.0.1', interface: 0 }],
    routes: [{ dst: '0.0.0.0/0' }],
    dns: {},
  };
  return pluginConf('/var/run/istio-cni', prevResult, {
    ipam: {},
    dns: {},
    plugin_log_level: 'info',
    ambient_enabled: false,
    enablement_selectors: [{ podSelector: { matchLabels: { 'istio.io/dataplane-mode': 'ambient' } } }],
    native_nftables: true,
    ...over,
  });
}
