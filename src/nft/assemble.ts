// Turns rules collected per table (in generation order) into a Transaction, the way Istio's
// sidecar and ambient code do: add + flush each table, declare its chains in a fixed order,
// then the rules, turning inserts nft would refuse into appends.
import { BaseChain, Family, Op, Transaction, concat } from './transaction';

export interface ChainSpec {
  readonly name: string;
  readonly base?: BaseChain;
}

export interface TableSpec {
  readonly family: Family;
  readonly name: string;
  /** Declared chains, in the order they are written. */
  readonly chains: readonly ChainSpec[];
}

export interface PendingRule {
  readonly chain: string;
  readonly tokens: readonly string[];
  /** Set for inserts: insert before this 0-based position. */
  readonly index?: number;
}

export interface AssemblyPolicy {
  /**
   * Which declared chains get written: only those with rules (sidecar), or also those a
   * `jump <chain>` token in the same table refers to (ambient).
   */
  readonly chains: 'with-rules' | 'with-rules-or-jump-targets';
  /**
   * When an insert becomes an append: into an empty chain only (ambient), or also when the
   * index is at or past the chain's current length (sidecar, after Istio's fix for #58135).
   */
  readonly insertAsAppend: 'empty-chain' | 'empty-or-past-end';
}

/**
 * Decide, rule by rule, whether an insert stays an insert. The count is of rules emitted so far
 * to the same chain in this transaction: each run starts from a flushed table.
 */
export function normalizeInserts(rules: readonly PendingRule[], policy: AssemblyPolicy['insertAsAppend']): PendingRule[] {
  const count = new Map<string, number>();
  return rules.map((r) => {
    const n = count.get(r.chain) ?? 0;
    count.set(r.chain, n + 1);
    if (r.index === undefined) return r;
    const append = n === 0 || (policy === 'empty-or-past-end' && r.index >= n);
    return append ? { chain: r.chain, tokens: r.tokens } : r;
  });
}

function chainsToWrite(spec: TableSpec, rules: readonly PendingRule[], policy: AssemblyPolicy): ChainSpec[] {
  const used = new Set(rules.map((r) => r.chain));
  if (policy.chains === 'with-rules-or-jump-targets') {
    for (const r of rules) {
      r.tokens.forEach((t, i) => {
        if (t === 'jump' && i + 1 < r.tokens.length) used.add(r.tokens[i + 1]);
      });
    }
  }
  return spec.chains.filter((c) => used.has(c.name));
}

/** One table's share of the transaction; nothing when it holds no rules. */
export function assembleTable(spec: TableSpec, rules: readonly PendingRule[], policy: AssemblyPolicy): Op[] {
  if (rules.length === 0) return [];
  const family = spec.family;
  const table = spec.name;
  const ops: Op[] = [
    { verb: 'add', kind: 'table', family, table },
    { verb: 'flush', kind: 'table', family, table },
  ];
  for (const c of chainsToWrite(spec, rules, policy)) {
    ops.push({ verb: 'add', kind: 'chain', family, table, chain: c.name, ...(c.base ? { base: c.base } : {}) });
  }
  for (const r of normalizeInserts(rules, policy.insertAsAppend)) {
    const rule = concat(r.tokens);
    ops.push(
      r.index === undefined
        ? { verb: 'add', kind: 'rule', family, table, chain: r.chain, rule }
        : { verb: 'insert', kind: 'rule', family, table, chain: r.chain, rule, index: r.index },
    );
  }
  return ops;
}

/** Tables in the given order; `add` before `delete` keeps the delete from failing when absent. */
export function deleteTables(specs: readonly TableSpec[]): Transaction {
  return specs.flatMap((s): Op[] => [
    { verb: 'add', kind: 'table', family: s.family, table: s.name },
    { verb: 'delete', kind: 'table', family: s.family, table: s.name },
  ]);
}
