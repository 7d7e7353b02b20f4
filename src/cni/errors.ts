// CNI error results: the spec's well-known codes, and this plugin's own (100 and up).

export const ErrorCode = {
  /** Incompatible CNI version. */
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  /** A CNI_* environment variable is missing or invalid; the message names it. */
  InvalidEnvironment: 4,
  IoFailure: 5,
  /** Stdin (or part of it) is not decodable. */
  DecodingFailure: 6,
  /** The network configuration is invalid; the message names the key. */
  InvalidConfig: 7,
  /** CNI_NETNS names the plugin's own network namespace. */
  InvalidNetns: 8,
  /** A transient condition (e.g. the Kubernetes API cannot be reached); the runtime may retry. */
  TryAgainLater: 11,
  /** STATUS: the plugin cannot service ADD. */
  NotAvailable: 50,

  // Plugin-specific codes (the spec leaves 100+ to plugins).
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
  /** ambient_enabled needs the ambient branch, which this build does not have yet. */
  AmbientUnavailable: 107,
  /** An ambient pod could not be handed to the node agent (pluginevent.sock unreachable, or the agent refused it). */
  AmbientAgentUnreachable: 108,
  /** Whether the pod is ambient could not be decided (API errors) and enable_ambient_detection_retry asks to fail. */
  AmbientDetectionFailed: 109,
} as const;

export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

/** An error that becomes the CNI error result `{cniVersion, code, msg, details}`. */
export class CniError extends Error {
  constructor(
    readonly code: number,
    readonly msg: string,
    readonly details: string = '',
  ) {
    super(details ? `${msg}: ${details}` : msg);
    this.name = 'CniError';
  }
}

export interface CniErrorResult {
  cniVersion: string;
  code: number;
  msg: string;
  details: string;
}

export function errorResult(cniVersion: string, e: CniError): CniErrorResult {
  return { cniVersion, code: e.code, msg: e.msg, details: e.details };
}
