// Which pods ambient mode captures: Istio's enablement selectors (cni/pkg/util/enablement_selector.go),
// shared by the CNI plugin (on ADD) and the node agent (on every pod and namespace change).
//
// A pod matches when it is not host-networked, has no sidecar (annotation sidecar.istio.io/status),
// and some entry's podSelector matches the pod's labels AND its namespaceSelector matches the
// namespace's labels; an absent or empty selector matches everything. Helm's default entries:
//   {podSelector: {matchLabels: {istio.io/dataplane-mode: ambient}}}
//   {podSelector: {matchExpressions: [{key: istio.io/dataplane-mode, operator: NotIn, values: [none]}]},
//    namespaceSelector: {matchLabels: {istio.io/dataplane-mode: ambient}}}

export const DATAPLANE_MODE_LABEL = 'istio.io/dataplane-mode';
export const SIDECAR_STATUS_ANNOTATION = 'sidecar.istio.io/status';

/** metav1.LabelSelector, in either of the shapes this project parses it into (null = absent). */
export interface LabelSelectorLike {
  readonly matchLabels?: Readonly<Record<string, string>> | null;
  readonly matchExpressions?: ReadonlyArray<{
    readonly key: string;
    readonly operator: string;
    readonly values?: readonly string[] | null;
  }> | null;
}

export interface EnablementSelectorLike {
  readonly podSelector?: LabelSelectorLike | null;
  readonly namespaceSelector?: LabelSelectorLike | null;
}

export type Labels = Readonly<Record<string, string>> | null | undefined;

/** No requirement at all: matches every label set. */
export function selectorIsEmpty(s: LabelSelectorLike | null | undefined): boolean {
  return !s || (Object.keys(s.matchLabels ?? {}).length === 0 && (s.matchExpressions ?? []).length === 0);
}

const has = (labels: Labels, k: string) => !!labels && Object.prototype.hasOwnProperty.call(labels, k);

/** Kubernetes label selector semantics (every requirement must hold; NotIn holds for an absent key). */
export function selectorMatches(s: LabelSelectorLike | null | undefined, labels: Labels): boolean {
  if (!s) return true;
  for (const [k, v] of Object.entries(s.matchLabels ?? {})) {
    if (!has(labels, k) || labels![k] !== v) return false;
  }
  for (const r of s.matchExpressions ?? []) {
    const present = has(labels, r.key);
    const values = r.values ?? [];
    switch (r.operator) {
      case 'In':
        if (!present || !values.includes(labels![r.key])) return false;
        break;
      case 'NotIn':
        if (present && values.includes(labels![r.key])) return false;
        break;
      case 'Exists':
        if (!present) return false;
        break;
      case 'DoesNotExist':
        if (present) return false;
        break;
      default:
        // The parsers refuse other operators; an unknown one never matches.
        return false;
    }
  }
  return true;
}

export interface PodForEnablement {
  readonly metadata?: { readonly labels?: Labels; readonly annotations?: Labels } | null;
  readonly spec?: { readonly hostNetwork?: boolean | null } | null;
}

/** Istio's CompiledEnablementSelectors.Matches. */
export function podMatchesEnablement(selectors: readonly EnablementSelectorLike[], pod: PodForEnablement, namespaceLabels: Labels): boolean {
  if (pod.spec?.hostNetwork) return false;
  if (has(pod.metadata?.annotations, SIDECAR_STATUS_ANNOTATION)) return false;
  const labels = pod.metadata?.labels;
  return selectors.some((e) => selectorMatches(e.podSelector, labels) && selectorMatches(e.namespaceSelector, namespaceLabels));
}

/** Istio's MatchesNamespace: only entries with a non-empty namespace selector count. */
export function namespaceMatchesEnablement(selectors: readonly EnablementSelectorLike[], namespaceLabels: Labels): boolean {
  return selectors.some((e) => !selectorIsEmpty(e.namespaceSelector) && selectorMatches(e.namespaceSelector, namespaceLabels));
}
