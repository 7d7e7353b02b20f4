// Pods as the API server would hold them after Istio's sidecar injector (with the CNI plugin
// enabled) has run, and a plain pod. With CNI, the injector adds no istio-init container: it
// adds istio-validation (istio-iptables --run-validation --skip-rule-apply) and istio-proxy, the
// sidecar.istio.io/status annotation, and the traffic annotations the injection template
// writes from the mesh defaults.
import { randomUUID } from 'node:crypto';
import { Pod } from '../../../src/kube/pod';

export interface PodSpecLite {
  name: string;
  namespace: string;
  uid: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  pod: Pod;
}

/** istio-iptables flags and their values, in order, as a command line: `{ '-p': '15001' }` is `['-p', '15001']`. */
export const iptablesArgs = (flags: Record<string, string>): string[] => Object.entries(flags).flat();

/** The istio-iptables arguments the injection template gives istio-validation for the defaults. */
export const VALIDATION_ARGS = [
  'istio-iptables',
  ...iptablesArgs({ '-p': '15001', '-z': '15006', '-u': '1337', '-m': 'REDIRECT', '-i': '*', '-x': '', '-b': '*', '-d': '15090,15021,15020' }),
  '--log_output_level=default:info',
  '--run-validation',
  '--skip-rule-apply',
];

const STATUS = JSON.stringify({
  initContainers: ['istio-validation'],
  containers: ['istio-proxy'],
  volumes: ['workload-socket', 'credential-socket', 'workload-certs', 'istio-envoy', 'istio-data', 'istio-podinfo', 'istio-token', 'istiod-ca-cert'],
  imagePullSecrets: null,
  revision: 'default',
});

export function injectedPod(opts: {
  name: string;
  namespace: string;
  /** Annotations the user put on the pod template; they win over the template's defaults. */
  annotations?: Record<string, string>;
  proxyUid?: number;
}): PodSpecLite {
  const uid = randomUUID();
  const app = opts.name.replace(/-[^-]*$/, '');
  const labels = {
    app,
    'security.istio.io/tlsMode': 'istio',
    'service.istio.io/canonical-name': app,
    'service.istio.io/canonical-revision': 'latest',
  };
  const annotations: Record<string, string> = {
    'istio.io/rev': 'default',
    'kubectl.kubernetes.io/default-container': app,
    'kubectl.kubernetes.io/default-logs-container': app,
    'prometheus.io/path': '/stats/prometheus',
    'prometheus.io/port': '15020',
    'prometheus.io/scrape': 'true',
    'sidecar.istio.io/interceptionMode': 'REDIRECT',
    'traffic.sidecar.istio.io/includeOutboundIPRanges': '*',
    'traffic.sidecar.istio.io/includeInboundPorts': '*',
    'traffic.sidecar.istio.io/excludeInboundPorts': '15020',
    ...opts.annotations,
    'sidecar.istio.io/status': STATUS,
  };
  const proxyUid = opts.proxyUid ?? 1337;
  const pod: Pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: opts.name, namespace: opts.namespace, uid, labels, annotations },
    spec: {
      initContainers: [
        {
          name: 'istio-validation',
          args: VALIDATION_ARGS,
          securityContext: { runAsUser: proxyUid, runAsGroup: proxyUid },
        },
      ],
      containers: [
        { name: app, args: [] },
        {
          name: 'istio-proxy',
          args: [
            'proxy',
            'sidecar',
            '--domain',
            '$(POD_NAMESPACE).svc.cluster.local',
            '--proxyLogLevel=warning',
            '--proxyComponentLogLevel=misc:error',
            '--log_output_level=default:info',
          ],
          env: [
            { name: 'PILOT_CERT_PROVIDER', value: 'istiod' },
            { name: 'CA_ADDR', value: 'istiod.istio-system.svc:15012' },
            { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
            { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
            { name: 'ISTIO_META_APP_CONTAINERS', value: app },
            { name: 'ISTIO_META_CLUSTER_ID', value: 'Kubernetes' },
            { name: 'ISTIO_META_MESH_ID', value: 'cluster.local' },
          ],
          securityContext: { runAsUser: proxyUid, runAsGroup: proxyUid },
        },
      ],
    },
  };
  return { name: opts.name, namespace: opts.namespace, uid, labels, annotations, pod };
}

/** A pod outside the mesh: no sidecar, no status annotation. */
export function plainPod(opts: { name: string; namespace: string }): PodSpecLite {
  const uid = randomUUID();
  const labels = { app: opts.name.replace(/-[^-]*$/, '') };
  const annotations = { 'example.com/owner': 'e2e' };
  return {
    name: opts.name,
    namespace: opts.namespace,
    uid,
    labels,
    annotations,
    pod: {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: opts.name, namespace: opts.namespace, uid, labels, annotations },
      spec: { containers: [{ name: labels.app, args: [] }] },
    },
  };
}

/** A plain pod as the API holds it before it starts: on `node`, Pending, its own service account. */
export function nodePod(name: string, namespace: string, node: string): PodSpecLite {
  const uid = randomUUID();
  const labels = { app: name.replace(/-[^-]*$/, '') };
  return {
    name,
    namespace,
    uid,
    labels,
    annotations: {},
    pod: {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace, uid, labels, annotations: {} },
      spec: { nodeName: node, serviceAccountName: `sa-${labels.app}`, containers: [{ name: labels.app }] },
      status: { phase: 'Pending' },
    } as PodSpecLite['pod'],
  };
}
