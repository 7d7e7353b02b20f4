// CNI error results and the spec's well-known codes (a plugin's own, 100 and up, live with it:
// src/plugin/errors.ts).

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
