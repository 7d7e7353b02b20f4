// The shape of `nft -j list ruleset` (libnftables-json(5)) as far as we read it: the kernel's
// answer, so every field is optional to the reader and values we do not interpret stay unknown.

export interface NftJsonRuleset {
  nftables: NftJsonItem[];
}

/** One entry of the list: exactly one of these keys is set. */
export interface NftJsonItem {
  metainfo?: { version?: string; release_name?: string; json_schema_version?: number };
  table?: { family: string; name: string; handle?: number };
  chain?: { family: string; table: string; name: string; handle?: number; type?: string; hook?: string; prio?: number; policy?: string };
  rule?: { family: string; table: string; chain: string; handle?: number; comment?: string; expr: unknown[] };
  set?: NftJsonSet;
}

export interface NftJsonSet {
  family: string;
  table: string;
  name: string;
  type: string | string[];
  handle?: number;
  flags?: string[];
  comment?: string;
  elem?: NftJsonSetElem[];
}

/** A bare value, or an element object that carries a comment (and timeouts, which we do not set). */
export type NftJsonSetElem = string | number | { elem: { val: unknown; comment?: string } };
