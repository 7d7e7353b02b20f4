// An in-memory nft that applies a Transaction and dumps the resulting state the way
// knftables.Fake.Dump does, so tests can assert on final rule order rather than on text.
import { BaseChain, Family, SetType, Transaction, renderOp } from './transaction';

interface FakeChain {
  base?: BaseChain;
  rules: string[];
}

interface FakeElement {
  key: readonly string[];
  comment?: string;
}

interface FakeSet {
  type: SetType;
  comment?: string;
  elements: FakeElement[];
}

interface FakeTable {
  family: Family;
  name: string;
  chains: Map<string, FakeChain>;
  sets: Map<string, FakeSet>;
}

const sameKey = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((x, i) => x === b[i]);

export class FakeNft {
  private readonly tables = new Map<string, FakeTable>();

  /** Applies every operation, or none: the state is only replaced when all succeed. */
  run(tx: Transaction): void {
    const next = cloneTables(this.tables);
    for (const op of tx) {
      const key = `${op.family} ${op.table}`;
      const table = next.get(key);
      const fail = (why: string) => new Error(`${renderOp(op)}: ${why}`);
      if (op.kind === 'table') {
        if (op.verb === 'add') {
          if (!table) next.set(key, { family: op.family, name: op.table, chains: new Map(), sets: new Map() });
        } else if (!table) {
          throw fail('no such table');
        } else if (op.verb === 'flush') {
          // As the kernel does (checked with nft 1.0.6): rules go, chains and sets with their elements stay.
          for (const c of table.chains.values()) c.rules = [];
        } else {
          next.delete(key);
        }
        continue;
      }
      if (!table) throw fail('no such table');
      if (op.kind === 'chain') {
        if (!table.chains.has(op.chain)) table.chains.set(op.chain, { base: op.base, rules: [] });
        continue;
      }
      if (op.kind === 'set') {
        const set = table.sets.get(op.set);
        if (op.verb === 'add') {
          if (!set) table.sets.set(op.set, { type: op.type, comment: op.comment, elements: [] });
        } else if (!set) {
          throw fail('no such set');
        } else if (op.verb === 'flush') {
          set.elements = [];
        } else {
          table.sets.delete(op.set);
        }
        continue;
      }
      if (op.kind === 'element') {
        const set = table.sets.get(op.set);
        if (!set) throw fail('no such set');
        const i = set.elements.findIndex((e) => sameKey(e.key, op.key));
        if (op.verb === 'add') {
          // The kernel keeps an existing element as it is, old comment included.
          if (i < 0) set.elements.push({ key: [...op.key], comment: op.comment });
        } else if (i < 0) {
          throw fail('no such element');
        } else {
          set.elements.splice(i, 1);
        }
        continue;
      }
      const chain = table.chains.get(op.chain);
      if (!chain) throw fail('no such chain');
      for (const m of op.rule.matchAll(/@([A-Za-z0-9_./-]+)/g)) {
        if (!table.sets.has(m[1])) throw fail(`no such set ${m[1]}`);
      }
      if (op.verb === 'add') {
        chain.rules.push(op.rule);
      } else {
        if (op.index < 0 || op.index >= chain.rules.length) throw fail('index out of range');
        chain.rules.splice(op.index, 0, op.rule);
      }
    }
    this.tables.clear();
    for (const [k, v] of next) this.tables.set(k, v);
  }

  /** The elements of a set, in insertion order; undefined when the table or set is absent. */
  elements(family: Family, table: string, set: string): FakeElement[] | undefined {
    return this.tables.get(`${family} ${table}`)?.sets.get(set)?.elements.map((e) => ({ ...e }));
  }

  /**
   * Tables by family then name; chains by name, then sets by name; then each chain's rules in
   * order and each set's elements, all as "add" (knftables.Fake.Dump's order).
   */
  dump(): string {
    const out: string[] = [];
    const tables = [...this.tables.values()].sort(
      (a, b) => a.family.localeCompare(b.family) || a.name.localeCompare(b.name),
    );
    for (const t of tables) {
      const where = { family: t.family, table: t.name };
      out.push(renderOp({ verb: 'add', kind: 'table', ...where }));
      const names = [...t.chains.keys()].sort();
      for (const name of names) {
        const base = t.chains.get(name)!.base;
        out.push(renderOp({ verb: 'add', kind: 'chain', ...where, chain: name, ...(base ? { base } : {}) }));
      }
      const setNames = [...t.sets.keys()].sort();
      for (const name of setNames) {
        const s = t.sets.get(name)!;
        out.push(renderOp({ verb: 'add', kind: 'set', ...where, set: name, type: s.type, ...(s.comment !== undefined ? { comment: s.comment } : {}) }));
      }
      for (const name of names) {
        for (const rule of t.chains.get(name)!.rules) {
          out.push(renderOp({ verb: 'add', kind: 'rule', ...where, chain: name, rule }));
        }
      }
      for (const name of setNames) {
        for (const e of t.sets.get(name)!.elements) {
          out.push(renderOp({ verb: 'add', kind: 'element', ...where, set: name, key: e.key, ...(e.comment !== undefined ? { comment: e.comment } : {}) }));
        }
      }
    }
    return out.map((l) => `${l}\n`).join('');
  }
}

function cloneTables(src: Map<string, FakeTable>): Map<string, FakeTable> {
  const out = new Map<string, FakeTable>();
  for (const [k, t] of src) {
    const chains = new Map<string, FakeChain>();
    for (const [n, c] of t.chains) chains.set(n, { base: c.base, rules: [...c.rules] });
    const sets = new Map<string, FakeSet>();
    for (const [n, st] of t.sets) sets.set(n, { type: st.type, comment: st.comment, elements: st.elements.map((e) => ({ ...e })) });
    out.set(k, { family: t.family, name: t.name, chains, sets });
  }
  return out;
}
