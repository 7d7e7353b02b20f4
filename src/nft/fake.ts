// An in-memory nft that keeps state as the kernel does (knftables' Fake is the model): `add` of
// an existing object is kept as it is, `flush table` empties chains but keeps them and the sets,
// deleting what is absent fails, and a transaction applies whole or not at all. It takes typed
// operations or the rendered script text (as the addon would get it), and dumps the resulting
// state the way knftables.Fake.Dump does, so tests see stale tables and chains.
import { BaseChain, ChainType, Family, Hook, Op, SetType, Transaction, renderOp } from './transaction';

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
  private readonly state = new Map<string, FakeTable>();

  /** Applies every operation, or none: the state is only replaced when all succeed. */
  run(tx: Transaction): void {
    const next = cloneTables(this.state);
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
        if (op.verb === 'delete') {
          if (!table.chains.has(op.chain)) throw fail('no such chain');
          // The kernel refuses (EBUSY) while a rule of the table still jumps or goes to it.
          const ref = new RegExp(`\\b(jump|goto) ${op.chain.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(\\s|$)`);
          for (const [name, c] of table.chains) {
            if (name !== op.chain && c.rules.some((r) => ref.test(r))) throw fail(`chain in use by ${name}`);
          }
          table.chains.delete(op.chain);
        } else if (!table.chains.has(op.chain)) {
          table.chains.set(op.chain, { base: op.base, rules: [] });
        }
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
    this.state.clear();
    for (const [k, v] of next) this.state.set(k, v);
  }

  /** Runs script text in render()'s form (one operation per line) as one transaction. */
  runScript(script: string): void {
    this.run(parseScript(script));
  }

  /** Tables present, each with its chains by name (what a `list tables` + `list chains` shows). */
  tables(): { family: Family; table: string; chains: string[] }[] {
    return [...this.state.values()].map((t) => ({ family: t.family, table: t.name, chains: [...t.chains.keys()] }));
  }

  /** The elements of a set, in insertion order; undefined when the table or set is absent. */
  elements(family: Family, table: string, set: string): FakeElement[] | undefined {
    return this.state
      .get(`${family} ${table}`)
      ?.sets.get(set)
      ?.elements.map((e) => ({ ...e }));
  }

  /** The sets of a table with their elements (single-value keys), as a listing reads them. */
  sets(family: Family, table: string): Map<string, { value: string; comment: string }[]> {
    const t = this.state.get(`${family} ${table}`);
    return new Map([...(t?.sets ?? [])].map(([name, set]) => [name, set.elements.map((e) => ({ value: e.key.join(' . '), comment: e.comment ?? '' }))]));
  }

  /**
   * Tables by family then name; chains by name, then sets by name; then each chain's rules in
   * order and each set's elements, all as "add" (knftables.Fake.Dump's order).
   */
  dump(): string {
    const out: string[] = [];
    const tables = [...this.state.values()].sort((a, b) => a.family.localeCompare(b.family) || a.name.localeCompare(b.name));
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

/**
 * Parses script text in the form renderOp writes back into operations; anything else is an
 * error naming the line, as nft's parser would refuse it.
 */
export function parseScript(script: string): Op[] {
  const ops: Op[] = [];
  script.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    const op = parseLine(line);
    if (!op) throw new Error(`fake nft: line ${i + 1} not understood: ${line}`);
    ops.push(op);
  });
  return ops;
}

const FAMILY = '(inet|ip|ip6)';
const NAME = '([A-Za-z0-9_./-]+)';

function parseLine(line: string): Op | undefined {
  let m = new RegExp(`^(add|flush|delete) table ${FAMILY} ${NAME}$`).exec(line);
  if (m) return { verb: m[1] as 'add', kind: 'table', family: m[2] as Family, table: m[3] };
  m = new RegExp(`^add chain ${FAMILY} ${NAME} ${NAME}(?: \\{ type (filter|nat|route) hook (\\w+) priority (-?\\d+) ; \\})?$`).exec(line);
  if (m) {
    const where = { family: m[1] as Family, table: m[2], chain: m[3] };
    return m[4] === undefined
      ? { verb: 'add', kind: 'chain', ...where }
      : { verb: 'add', kind: 'chain', ...where, base: { type: m[4] as ChainType, hook: m[5] as Hook, priority: Number(m[6]) } };
  }
  m = new RegExp(`^delete chain ${FAMILY} ${NAME} ${NAME}$`).exec(line);
  if (m) return { verb: 'delete', kind: 'chain', family: m[1] as Family, table: m[2], chain: m[3] };
  m = new RegExp(`^insert rule ${FAMILY} ${NAME} ${NAME} index (\\d+) (.+)$`).exec(line);
  if (m) return { verb: 'insert', kind: 'rule', family: m[1] as Family, table: m[2], chain: m[3], index: Number(m[4]), rule: m[5] };
  m = new RegExp(`^add rule ${FAMILY} ${NAME} ${NAME} (.+)$`).exec(line);
  if (m) return { verb: 'add', kind: 'rule', family: m[1] as Family, table: m[2], chain: m[3], rule: m[4] };
  m = new RegExp(`^add set ${FAMILY} ${NAME} ${NAME} \\{ type (ipv4_addr|ipv6_addr) ;(?: comment ("(?:[^"\\\\]|\\\\.)*") ;)? \\}$`).exec(line);
  if (m) {
    const where = { family: m[1] as Family, table: m[2], set: m[3], type: m[4] as SetType };
    return m[5] === undefined ? { verb: 'add', kind: 'set', ...where } : { verb: 'add', kind: 'set', ...where, comment: unquote(m[5]) };
  }
  m = new RegExp(`^(flush|delete) set ${FAMILY} ${NAME} ${NAME}$`).exec(line);
  if (m) return { verb: m[1] as 'flush', kind: 'set', family: m[2] as Family, table: m[3], set: m[4] };
  m = new RegExp(`^(add|delete) element ${FAMILY} ${NAME} ${NAME} \\{ (.+?)(?: comment ("(?:[^"\\\\]|\\\\.)*"))? \\}$`).exec(line);
  if (m) {
    const where = { family: m[2] as Family, table: m[3], set: m[4], key: m[5].split(' . ') };
    return m[6] === undefined ? { verb: m[1] as 'add', kind: 'element', ...where } : { verb: m[1] as 'add', kind: 'element', ...where, comment: unquote(m[6]) };
  }
  return undefined;
}

/** The inverse of goQuote for what it writes (named escapes and \xNN). */
function unquote(q: string): string {
  const named: Record<string, string> = { '"': '"', '\\': '\\', a: '\x07', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v' };
  return q.slice(1, -1).replace(/\\(x[0-9a-f]{2}|.)/g, (_, e: string) => (e.length === 3 ? String.fromCharCode(parseInt(e.slice(1), 16)) : (named[e] ?? e)));
}
