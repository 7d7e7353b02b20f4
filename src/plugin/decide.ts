// Istio's decisions on ADD, as pure functions: which pods the plugin leaves alone before it
// asks the API server, and which it leaves alone once it knows the pod (plugin.go, doAddRun).
import { K8sArgs } from '../cni/args';
import { Annotation, ISTIO_INIT, ISTIO_PROXY, Label, PodInfo, ProxyEnv, parseGoBool } from '../redirect';
import { PluginConfig } from './config';

/** Name prefix of the istio-cni DaemonSet's pods. */
export const AGENT_POD_PREFIX = 'istio-cni-node-';

/**
 * Our own node agent's pod: passed through before any Kubernetes access, because after a node
 * reboot its kubeconfig may not exist until that very pod runs (istio/istio#60721).
 */
export function isOwnAgentPod(conf: PluginConfig, args: K8sArgs): boolean {
  return args.podName.startsWith(AGENT_POD_PREFIX) && args.podNamespace === conf.podNamespace;
}

export type EarlyDecision = { readonly pass: true; readonly reason: 'own-agent-pod' | 'not-kubernetes' | 'excluded-namespace' } | { readonly pass: false };

/** Decisions that need no API access. Checked in this order. */
export function earlyDecision(conf: PluginConfig, args: K8sArgs): EarlyDecision {
  if (isOwnAgentPod(conf, args)) return { pass: true, reason: 'own-agent-pod' };
  if (args.podName === '' || args.podNamespace === '') return { pass: true, reason: 'not-kubernetes' };
  if (conf.excludeNamespaces.includes(args.podNamespace)) return { pass: true, reason: 'excluded-namespace' };
  return { pass: false };
}

export type SkipReason = 'istio-init-present' | 'envoy-disabled' | 'no-istio-proxy' | 'not-a-sidecar' | 'injection-disabled' | 'no-sidecar-status';

export const SKIP_EXPLANATION: Record<SkipReason, string> = {
  'istio-init-present': `the pod has an ${ISTIO_INIT} container, which sets up its own capture`,
  'envoy-disabled': `${ISTIO_PROXY} has ${ProxyEnv.disableEnvoy}=true`,
  'no-istio-proxy': `the pod has no ${ISTIO_PROXY} container`,
  'not-a-sidecar': `${ISTIO_PROXY} runs a proxy type other than sidecar`,
  'injection-disabled': `${Label.inject} is false`,
  'no-sidecar-status': `the pod has no ${Annotation.status} annotation (not injected)`,
};

/** Why a pod gets no sidecar capture, or undefined when it does. Checked in upstream's order. */
export function sidecarSkipReason(pi: PodInfo): SkipReason | undefined {
  if (pi.containers.has(ISTIO_INIT)) return 'istio-init-present';
  const disable = pi.proxyEnv.get(ProxyEnv.disableEnvoy);
  if (disable !== undefined && parseGoBool(disable) === true) return 'envoy-disabled';
  if (!pi.containers.has(ISTIO_PROXY)) return 'no-istio-proxy';
  if (pi.proxyType !== '' && pi.proxyType !== 'sidecar') return 'not-a-sidecar';
  // The label is the newer API and wins over the annotation; an unparsable value is ignored.
  const inject = Object.prototype.hasOwnProperty.call(pi.labels, Label.inject) ? pi.labels[Label.inject] : (pi.annotations[Annotation.inject] ?? '');
  if (inject !== '' && parseGoBool(inject) === false) return 'injection-disabled';
  if (!Object.prototype.hasOwnProperty.call(pi.annotations, Annotation.status)) return 'no-sidecar-status';
  return undefined;
}
