// The one door from bench/ into test/: infrastructure the tests and the benchmarks share, kept
// once (issue 14: no copies). The e2e node (a private containerd with bridge → portmap, its CRI
// client and sandbox image, the node agent's flags and environment there) and its Kubernetes API stand-in (TLS, pod GET, list + watch of a
// node's pods, the service-account files); the pods Istio's injector makes; the ambient API and
// ztunnel stand-ins; a throwaway PKI; free ports, plain GETs, line splitting and the one polling wait. What only the
// benchmarks need lives beside this file in bench/support.
export { E2eWorld, PLUGIN_TYPE, agentEnv, openWorld, referenceRuleset, requirePrerequisites, sweepStaleRuns } from '../../test/root/e2e/harness';
export type { RunningPod } from '../../test/root/e2e/harness';
export { injectedPod } from '../../test/root/e2e/pods';
export type { PodSpecLite } from '../../test/root/e2e/pods';
export { KubeApiStandIn, KubeApiStandIn as AmbientApiStandIn } from '../../test/support/kube-api';
export { ZtunnelStandIn } from '../../test/support/ztunnel-standin';
export { makePki } from '../../test/support/tls';
export { freePort, httpGet } from '../../test/support/http-get';
export { onLines } from '../../test/support/child-lines';
export { agentArgs } from '../../test/support/agent-proc';
export { until as untilOrFail } from '../../test/support/until';
