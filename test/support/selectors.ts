// Istio's default ambient enablement selectors (the chart's AMBIENT_ENABLEMENT_SELECTOR): an
// ambient pod label, or an ambient namespace label unless the pod opts out with `none`. A module of
// its own so the e2e harness (and the benches through it) take it without the ambient test node.
export const SELECTORS_YAML = `- podSelector:
    matchLabels:
      istio.io/dataplane-mode: ambient
- podSelector:
    matchExpressions:
    - key: istio.io/dataplane-mode
      operator: NotIn
      values:
      - none
  namespaceSelector:
    matchLabels:
      istio.io/dataplane-mode: ambient
`;
