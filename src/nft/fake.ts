// An in-memory nft that applies a Transaction and dumps the resulting state the way
// knftables.Fake.Dump does, so tests can assert on final rule order rather than on text.
import { BaseChain, Family, Transaction, renderOp } from './transaction';

interface FakeChain {
  base?: BaseChain;
  rules: string[];
}

interface FakeTable {
  family: Family;
  name: string;
  chains: Map<string, FakeChain>;
}

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
          if (!table) next.set(key, { family: op.family, name: op.table, chains: new Map() });
        } else if (!table) {
          throw fail('no such table');
        } else if (op.verb === 'flush') {
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
      const chain = table.chains.get(op.chain);
      if (!chain) throw fail('no such chain');
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

  /** Tables by family then name; chains by name; then each chain's rules in order, all as "add". */
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
      for (const name of names) {
        for (const rule of t.chains.get(name)!.rules) {
          out.push(renderOp({ verb: 'add', kind: 'rule', ...where, chain: name, rule }));
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
    out.set(k, { family: t.family, name: t.name, chains });
  }
  return out;
}
