// "Replace the tables we own" as one transaction at the kernel's cheapest. Deleting or flushing
// an object that exists makes nf_tables wait for an RCU grace period (~10-16 ms) when the
// netlink socket closes; adding does not. So the plan starts from a listing of the netns and
// deletes only what is stale: an owned table the new transaction no longer builds, and chains
// that exist but the new transaction does not declare (`flush table` empties chains but keeps
// them). Into a fresh netns the plan is the desired transaction itself, the goldens' own text.
import { Op, TableRef, Transaction, tablesOf } from './transaction';

/** One table as a listing shows it: its chains by name (rules are not needed to plan). */
export interface ListedTable extends TableRef {
  readonly chains: readonly string[];
}

/** The tables present in a netns (all of them, or at least every owned one). */
export type NftState = readonly ListedTable[];

const keyOf = (t: TableRef) => `${t.family} ${t.table}`;

/**
 * The transaction that turns `current` into exactly what `desired` builds for every table in
 * `owned` (and every table `desired` touches): `desired` unchanged, plus `delete table` for each
 * owned table that is present but not wanted, and `delete chain` (right after the table's flush,
 * when no rule can refer to it any more) for each listed chain the new transaction does not
 * declare. Nothing is deleted that the listing does not show, so a fresh netns gets add-only
 * text. Pure: `--dry-run` and tests can show what would be sent for a given state.
 */
export function planReplace(desired: Transaction, owned: readonly TableRef[], current: NftState): Transaction {
  const listed = new Map(current.map((t) => [keyOf(t), t]));
  const wanted = new Set(tablesOf(desired).map(keyOf));
  const ops: Op[] = [];
  const seen = new Set<string>();
  for (const t of owned) {
    const k = keyOf(t);
    if (seen.has(k) || wanted.has(k)) continue;
    seen.add(k);
    if (listed.has(k)) ops.push({ verb: 'delete', kind: 'table', family: t.family, table: t.table });
  }

  const declared = new Map<string, Set<string>>();
  for (const op of desired) {
    if (op.kind !== 'chain' || op.verb !== 'add') continue;
    const k = keyOf(op);
    if (!declared.has(k)) declared.set(k, new Set());
    declared.get(k)!.add(op.chain);
  }
  // Where a table's stale chains go: after its flush, else after its first op (then the
  // transaction did not flush it, and a chain that still holds rules is not ours to drop).
  const anchor = new Map<string, number>();
  desired.forEach((op, i) => {
    const k = keyOf(op);
    if (op.kind === 'table' && op.verb === 'flush') anchor.set(k, i);
  });
  const staleChains = new Map<string, Op[]>();
  for (const [k, t] of listed) {
    if (!wanted.has(k) || !anchor.has(k)) continue;
    const keep = declared.get(k) ?? new Set<string>();
    const stale = t.chains.filter((c) => !keep.has(c));
    if (stale.length > 0) {
      staleChains.set(
        k,
        stale.map((chain): Op => ({ verb: 'delete', kind: 'chain', family: t.family, table: t.table, chain })),
      );
    }
  }
  desired.forEach((op, i) => {
    ops.push(op);
    const k = keyOf(op);
    if (anchor.get(k) === i) ops.push(...(staleChains.get(k) ?? []));
  });
  return ops;
}

/** The owned tables the listing shows, as deletes: removal that costs nothing when there is nothing. */
export function planRemove(owned: readonly TableRef[], current: NftState): Transaction {
  return planReplace([], owned, current);
}

/**
 * Reads `nft -j` listing output (`list tables` then `list chains`, one JSON document per line,
 * as libnftables prints them) into the state planReplace takes.
 */
export function parseListing(text: string): NftState {
  const tables = new Map<string, { family: TableRef['family']; table: string; chains: string[] }>();
  const table = (family: string, name: string) => {
    const k = `${family} ${name}`;
    if (!tables.has(k)) tables.set(k, { family: family as TableRef['family'], table: name, chains: [] });
    return tables.get(k)!;
  };
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const doc = JSON.parse(line) as { nftables?: Record<string, { family?: unknown; name?: unknown; table?: unknown }>[] };
    for (const item of doc.nftables ?? []) {
      const t = item.table;
      if (t && typeof t.family === 'string' && typeof t.name === 'string') table(t.family, t.name);
      const c = item.chain;
      if (c && typeof c.family === 'string' && typeof c.table === 'string' && typeof c.name === 'string') {
        table(c.family, c.table).chains.push(c.name);
      }
    }
  }
  return [...tables.values()];
}

/** The nft commands whose `-j` output parseListing reads. */
export const LISTING_SCRIPT = 'list tables\nlist chains\n';

/** The nft command whose `-j` output is the whole ruleset (NftJsonRuleset). */
export const RULESET_SCRIPT = 'list ruleset';
