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

/** A set element as the readers of a listing need it: its value as nft prints it, and its comment. */
export interface SetElement {
  readonly value: string;
  readonly comment: string;
}

/**
 * The sets of one table in a listing, by name, with their elements (those with a plain value;
 * the sets we keep hold single addresses). Absent table: an empty map.
 */
export function setsOf(json: NftJsonRuleset | undefined, family: string, table: string): Map<string, SetElement[]> {
  const out = new Map<string, SetElement[]>();
  for (const item of json?.nftables ?? []) {
    const s = item?.set;
    if (!s || s.family !== family || s.table !== table) continue;
    const elems: SetElement[] = [];
    for (const e of s.elem ?? []) {
      const val = typeof e === 'object' ? e?.elem?.val : e;
      const comment = typeof e === 'object' ? (e?.elem?.comment ?? '') : '';
      if (typeof val === 'string') elems.push({ value: val, comment: String(comment) });
    }
    out.set(s.name, elems);
  }
  return out;
}
