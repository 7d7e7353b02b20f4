// This plugin's own CNI error codes (the spec leaves 100 and up to plugins), and the error every
// unexpected failure becomes.
import { CniError } from '../cni/errors';

export const PluginErrorCode = {
  /** An unexpected failure inside the plugin (upstream uses 999 for these). */
  Internal: 100,
  /** <cni_agent_run_dir>/istio-cni-kubeconfig is missing or unusable. */
  KubeconfigUnusable: 101,
  /** The API server answered the pod lookup with an error (401, 403, 404, ...) on every attempt. */
  PodLookupFailed: 102,
  /** A pod annotation or istio-proxy setting is invalid; the message names it and its value. */
  InvalidPodSettings: 103,
  /** CNI_NETNS does not exist or is not a network namespace. */
  NetnsUnusable: 104,
  /** nftables (or the TPROXY routes) could not be applied in the pod's netns. */
  RuleApplyFailed: 105,
  /** CHECK: the pod should be captured but our tables are missing from its netns. */
  RulesMissing: 106,
  /** An ambient pod could not be handed to the node agent (pluginevent.sock unreachable, or the agent refused it). */
  AmbientAgentUnreachable: 108,
  /** Whether the pod is ambient could not be decided (API errors) and enable_ambient_detection_retry asks to fail. */
  AmbientDetectionFailed: 109,
} as const;

/** An unexpected failure inside the plugin (upstream answers 999 for these). */
export function internalError(e: unknown): CniError {
  const msg = e instanceof Error ? e.message : String(e);
  return new CniError(PluginErrorCode.Internal, 'istio-cni-ts internal error', msg);
}
