// Facts of Istio's istio-cni Helm chart at tag 1.28.1 (istio/istio manifests/charts/istio-cni:
// templates/daemonset.yaml, configmap-cni.yaml, clusterrole.yaml, clusterrolebinding.yaml,
// serviceaccount.yaml, _helpers.tpl, values.yaml, files/profile-ambient.yaml), written down as
// data: what a `helm template` of the chart yields at its default values ("sidecar") and with
// profile=ambient ("ambient", which sets ambient.enabled), release istio-cni in istio-system.
// No template text is copied; test/unit/chart-rendering.test.ts compares install/kubernetes/ with it.
//
// Values behind the facts (values.yaml defaults): cniBinDir /opt/cni/bin, cniConfDir
// /etc/cni/net.d, cniNetnsDir /var/run/netns, excludeNamespaces [kube-system], chained true,
// ambient.{dnsCapture,ipv6} true, ambient.reconcileIptablesOnStartup false,
// ambient.shareHostNetworkNamespace false, repair.{enabled,repairPods} true, repair.{labelPods,
// deletePods} false, global.logging.level info, global.logAsJson false, global.nativeNftables
// false, resources.requests {cpu 100m, memory 100Mi}, updateStrategy RollingUpdate maxUnavailable 1.

export type Profile = 'sidecar' | 'ambient';

export interface EnvFact {
  name: string;
  /** A literal value. */
  value?: string;
  /** Downward API: a pod field. */
  field?: { fieldPath: string; apiVersion?: string };
  /** Downward API: a container resource. */
  resource?: { resource: string; divisor: string };
}

export interface RuleFact {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
}

export const CHART = {
  tag: '1.28.1',
  namespace: 'istio-system',
  /** The image: `image` is used as is when it contains a '/', else hub/image:tag (defaults install-cni). */
  imageValue: { name: 'image', default: 'install-cni', fullReferenceWhen: "contains '/'" },

  /** Labels every object carries (besides Helm's own managed-by and chart labels). */
  commonLabels: {
    release: 'istio-cni',
    'istio.io/rev': 'default',
    'install.operator.istio.io/owning-resource': 'unknown',
    'operator.istio.io/component': 'Cni',
    'app.kubernetes.io/name': 'istio-cni',
    'app.kubernetes.io/instance': 'istio-cni',
    'app.kubernetes.io/part-of': 'istio',
  } as Record<string, string>,

  serviceAccount: 'istio-cni',
  configMap: 'istio-cni-config',
  daemonSet: 'istio-cni-node',

  daemonSetLabels: { 'k8s-app': 'istio-cni-node' } as Record<string, string>,
  selector: { matchLabels: { 'k8s-app': 'istio-cni-node' } },
  updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } },
  podLabels: {
    'k8s-app': 'istio-cni-node',
    'sidecar.istio.io/inject': 'false',
    'istio.io/dataplane-mode': 'none',
    'app.kubernetes.io/name': 'istio-cni',
    'app.kubernetes.io/instance': 'istio-cni',
    'app.kubernetes.io/part-of': 'istio',
  } as Record<string, string>,
  podAnnotations: {
    'sidecar.istio.io/inject': 'false',
    'prometheus.io/scrape': 'true',
    'prometheus.io/port': '15014',
    'prometheus.io/path': '/metrics',
    // AppArmor would refuse reading other processes' ns/net.
    'container.apparmor.security.beta.kubernetes.io/install-cni': 'unconfined',
  } as Record<string, string>,
  /** Only with ambient.shareHostNetworkNamespace (and then dnsPolicy ClusterFirstWithHostNet). */
  hostNetwork: false,
  nodeSelector: { 'kubernetes.io/os': 'linux' },
  tolerations: [
    { effect: 'NoSchedule', operator: 'Exists' },
    { key: 'CriticalAddonsOnly', operator: 'Exists' },
    { effect: 'NoExecute', operator: 'Exists' },
  ],
  priorityClassName: 'system-node-critical',
  terminationGracePeriodSeconds: 5,

  container: {
    name: 'install-cni',
    command: ['install-cni'],
    /** --log_output_level=<logging.level or global.logging.level>; --log_as_json with global.logAsJson. */
    args: ['--log_output_level=info'],
    ports: [{ containerPort: 15014, name: 'metrics', protocol: 'TCP' }],
    readinessProbe: { httpGet: { path: '/readyz', port: 8000 } },
    livenessProbe: undefined,
    securityContext: {
      privileged: false,
      runAsGroup: 0,
      runAsUser: 0,
      runAsNonRoot: false,
      capabilities: { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW', 'SYS_PTRACE', 'SYS_ADMIN', 'DAC_OVERRIDE'] },
    },
    envFrom: [{ configMapRef: { name: 'istio-cni-config' } }],
    /** In order. ALLOW_SWITCH_TO_HOST_NS is left out only with ambient.shareHostNetworkNamespace. */
    env: [
      { name: 'REPAIR_NODE_NAME', field: { fieldPath: 'spec.nodeName' } },
      { name: 'REPAIR_RUN_AS_DAEMON', value: 'true' },
      { name: 'REPAIR_SIDECAR_ANNOTATION', value: 'sidecar.istio.io/status' },
      { name: 'ALLOW_SWITCH_TO_HOST_NS', value: 'true' },
      { name: 'NODE_NAME', field: { apiVersion: 'v1', fieldPath: 'spec.nodeName' } },
      { name: 'GOMEMLIMIT', resource: { resource: 'limits.memory', divisor: '1' } },
      { name: 'GOMAXPROCS', resource: { resource: 'limits.cpu', divisor: '1' } },
      { name: 'POD_NAME', field: { fieldPath: 'metadata.name' } },
      { name: 'POD_NAMESPACE', field: { fieldPath: 'metadata.namespace' } },
    ] as EnvFact[],
    resources: { requests: { cpu: '100m', memory: '100Mi' } },
  },

  /** Mounts, in order; `profiles` when not in both. /host/proc is there because repair.repairPods (or ambient). */
  mounts: [
    { mountPath: '/host/opt/cni/bin', name: 'cni-bin-dir' },
    { mountPath: '/host/proc', name: 'cni-host-procfs', readOnly: true },
    { mountPath: '/host/etc/cni/net.d', name: 'cni-net-dir' },
    { mountPath: '/var/run/istio-cni', name: 'cni-socket-dir' },
    { mountPath: '/host/var/run/netns', mountPropagation: 'HostToContainer', name: 'cni-netns-dir', profiles: ['ambient'] },
    { mountPath: '/var/run/ztunnel', name: 'cni-ztunnel-sock-dir', profiles: ['ambient'] },
  ] as { mountPath: string; name: string; readOnly?: boolean; mountPropagation?: string; profiles?: Profile[] }[],

  /** Volumes, in order (cni-netns-dir is declared in both, mounted only with ambient). */
  volumes: [
    { name: 'cni-bin-dir', hostPath: { path: '/opt/cni/bin' } },
    { name: 'cni-host-procfs', hostPath: { path: '/proc', type: 'Directory' } },
    { name: 'cni-ztunnel-sock-dir', hostPath: { path: '/var/run/ztunnel', type: 'DirectoryOrCreate' }, profiles: ['ambient'] },
    { name: 'cni-net-dir', hostPath: { path: '/etc/cni/net.d' } },
    { name: 'cni-socket-dir', hostPath: { path: '/var/run/istio-cni' } },
    { name: 'cni-netns-dir', hostPath: { path: '/var/run/netns', type: 'DirectoryOrCreate' } },
  ] as { name: string; hostPath: { path: string; type?: string }; profiles?: Profile[] }[],

  /** ConfigMap data at defaults; CURRENT_AGENT_VERSION is the image tag; CNI_CONF_NAME and ISTIO_OWNED_CNI_CONF_FILENAME only when set. */
  configData: (p: Profile, imageTag: string): Record<string, string> => ({
    CURRENT_AGENT_VERSION: imageTag,
    AMBIENT_ENABLED: p === 'ambient' ? 'true' : 'false',
    AMBIENT_ENABLEMENT_SELECTOR: '(selector)',
    AMBIENT_DNS_CAPTURE: 'true',
    AMBIENT_IPV6: 'true',
    AMBIENT_RECONCILE_POD_RULES_ON_STARTUP: 'false',
    ISTIO_OWNED_CNI_CONFIG: 'false',
    CHAINED_CNI_PLUGIN: 'true',
    EXCLUDE_NAMESPACES: 'kube-system',
    REPAIR_ENABLED: 'true',
    REPAIR_LABEL_PODS: 'false',
    REPAIR_DELETE_PODS: 'false',
    REPAIR_REPAIR_PODS: 'true',
    REPAIR_INIT_CONTAINER_NAME: 'istio-validation',
    REPAIR_BROKEN_POD_LABEL_KEY: 'cni.istio.io/uninitialized',
    REPAIR_BROKEN_POD_LABEL_VALUE: 'true',
    NATIVE_NFTABLES: 'false',
  }),
  /** AMBIENT_ENABLEMENT_SELECTOR: the ambient.enablementSelectors list as YAML (compared parsed). */
  enablementSelectors: [
    { podSelector: { matchLabels: { 'istio.io/dataplane-mode': 'ambient' } } },
    {
      podSelector: { matchExpressions: [{ key: 'istio.io/dataplane-mode', operator: 'NotIn', values: ['none'] }] },
      namespaceSelector: { matchLabels: { 'istio.io/dataplane-mode': 'ambient' } },
    },
  ],

  /** ClusterRoles and their rules; istio-cni-ambient only with ambient. */
  clusterRoles: (p: Profile): Record<string, RuleFact[]> => ({
    'istio-cni': [{ apiGroups: [''], resources: ['pods', 'nodes', 'namespaces'], verbs: ['get', 'list', 'watch'] }],
    // repairPods adds nothing; deletePods would add pods delete, labelPods pods/status patch+update.
    'istio-cni-repair-role': [
      { apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] },
      { apiGroups: [''], resources: ['pods'], verbs: ['watch', 'get', 'list'] },
    ],
    ...(p === 'ambient'
      ? {
          'istio-cni-ambient': [
            { apiGroups: [''], resources: ['pods/status'], verbs: ['patch', 'update'] },
            { apiGroups: ['apps'], resources: ['daemonsets'], resourceNames: ['istio-cni-node'], verbs: ['get'] },
          ],
        }
      : {}),
  }),
  /** ClusterRoleBinding name -> ClusterRole, each to ServiceAccount istio-cni in the release namespace. */
  clusterRoleBindings: (p: Profile): Record<string, string> => ({
    'istio-cni': 'istio-cni',
    'istio-cni-repair-rolebinding': 'istio-cni-repair-role',
    ...(p === 'ambient' ? { 'istio-cni-ambient': 'istio-cni-ambient' } : {}),
  }),
  /** The repair and ambient bindings are labelled k8s-app istio-cni-repair, the others app istio-cni. */
  bindingLabel: (name: string): Record<string, string> => (name === 'istio-cni' ? { app: 'istio-cni' } : { 'k8s-app': 'istio-cni-repair' }),

  /** Platform values (files/profile-platform-*.yaml), for docs/operators.md. */
  platforms: {
    gke: { cniBinDir: '/home/kubernetes/bin (detected from a -gke Kubernetes version)', resourceQuotas: true },
    k3s: { cniConfDir: '/var/lib/rancher/k3s/agent/etc/cni/net.d', cniBinDir: '/var/lib/rancher/k3s/data/cni' },
    k3d: { cniConfDir: '/var/lib/rancher/k3s/agent/etc/cni/net.d', cniBinDir: '/bin' },
    microk8s: { cniConfDir: '/var/snap/microk8s/current/args/cni-network', cniBinDir: '/var/snap/microk8s/current/opt/cni/bin' },
    minikube: { cniNetnsDir: '/var/run/docker/netns' },
    openshift: {
      cniBinDir: '/var/lib/cni/bin',
      cniConfDir: '/etc/cni/multus/net.d',
      chained: false,
      cniConfFileName: 'istio-cni.conf',
      provider: 'multus',
      seLinuxType: 'spc_t',
    },
  },
} as const;
