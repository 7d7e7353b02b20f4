// Pod annotation and label keys the sidecar path reads (istio.io/api names).

export const Annotation = {
  interceptionMode: 'sidecar.istio.io/interceptionMode',
  includeOutboundIPRanges: 'traffic.sidecar.istio.io/includeOutboundIPRanges',
  excludeOutboundIPRanges: 'traffic.sidecar.istio.io/excludeOutboundIPRanges',
  includeInboundPorts: 'traffic.sidecar.istio.io/includeInboundPorts',
  excludeInboundPorts: 'traffic.sidecar.istio.io/excludeInboundPorts',
  includeOutboundPorts: 'traffic.sidecar.istio.io/includeOutboundPorts',
  excludeOutboundPorts: 'traffic.sidecar.istio.io/excludeOutboundPorts',
  excludeInterfaces: 'traffic.sidecar.istio.io/excludeInterfaces',
  rerouteVirtualInterfaces: 'istio.io/reroute-virtual-interfaces',
  /** Deprecated spelling of rerouteVirtualInterfaces, read only when the new key is absent. */
  kubevirtInterfaces: 'traffic.sidecar.istio.io/kubevirtInterfaces',
  /** Registered upstream but never read by the CNI plugin; we ignore it too. */
  statusPort: 'status.sidecar.istio.io/port',
  inject: 'sidecar.istio.io/inject',
  status: 'sidecar.istio.io/status',
} as const;

export const Label = {
  /** The label form of sidecar.istio.io/inject; it wins over the annotation. */
  inject: 'sidecar.istio.io/inject',
} as const;

/** istio-proxy env variables the redirect reads. */
export const ProxyEnv = {
  dnsCapture: 'ISTIO_META_DNS_CAPTURE',
  dualStack: 'ISTIO_DUAL_STACK',
  invalidDrop: 'INVALID_DROP',
  disableEnvoy: 'DISABLE_ENVOY',
} as const;
