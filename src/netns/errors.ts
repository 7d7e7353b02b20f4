// Errors of the netns effects, in a module of their own so callers can tell them apart without
// loading the addon.

/**
 * Any failure of applyNft, applyTransaction, listRulesetJson or deleteTables. `code` is "ENFT"
 * when nft itself refused the script (then `stderr` holds its diagnostics, each with
 * "<script>:LINE:COL" and the offending line), or an errno name when the namespace could not be
 * opened or entered ("ENOENT": no such netns file; "EINVAL": not a network namespace).
 */
export class NftError extends Error {
  override readonly name = 'NftError';
  constructor(
    message: string,
    readonly code: string,
    readonly netnsPath: string,
    /** The script that was run (as handed to libnftables). */
    readonly script: string,
    /** nft's error text; empty when nft never ran. */
    readonly stderr: string,
    /** Whether the netns was being listed (before any change) or a script applied. */
    readonly stage: 'list' | 'apply' = 'apply',
  ) {
    super(message);
  }
}

/** withNetnsSync could not open or enter the namespace. */
export class NetnsError extends Error {
  override readonly name = 'NetnsError';
  constructor(
    message: string,
    readonly code: string,
    readonly netnsPath: string,
  ) {
    super(message);
  }
}

/**
 * The netns itself was the problem: it could not be opened or entered (gone, or not a netns), or
 * listing its tables failed. The plugin answers these with code 104, not 105.
 */
export function isNetnsFault(e: unknown): boolean {
  if (e instanceof NetnsError) return true;
  return e instanceof NftError && (e.code !== 'ENFT' || e.stage === 'list');
}
