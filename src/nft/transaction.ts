// The one representation of rules: a list of typed nft operations that renders to the text
// knftables v0.0.21 writes (Istio's goldens), and that the native addon hands to libnftables.

export type Family = 'inet' | 'ip' | 'ip6';
export type ChainType = 'filter' | 'nat' | 'route';
export type Hook = 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting';

/** knftables' named priorities, as the numbers it writes. */
export const Priority = {
  raw: -300,
  mangle: -150,
  dstnat: -100,
  filter: 0,
  srcnat: 100,
} as const;

export interface BaseChain {
  readonly type: ChainType;
  readonly hook: Hook;
  readonly priority: number;
}

export interface TableRef {
  readonly family: Family;
  readonly table: string;
}

/** The set key types Istio's probe sets use. */
export type SetType = 'ipv4_addr' | 'ipv6_addr';

export type Op =
  | ({ readonly verb: 'add' | 'flush' | 'delete'; readonly kind: 'table' } & TableRef)
  | ({
      readonly verb: 'add';
      readonly kind: 'set';
      readonly set: string;
      readonly type: SetType;
      readonly comment?: string;
    } & TableRef)
  | ({ readonly verb: 'flush' | 'delete'; readonly kind: 'set'; readonly set: string } & TableRef)
  | ({
      readonly verb: 'add' | 'delete';
      readonly kind: 'element';
      readonly set: string;
      /** The key's parts (one for a plain address set); written joined by " . ". */
      readonly key: readonly string[];
      /** Written on add only, as knftables does. */
      readonly comment?: string;
    } & TableRef)
  | ({ readonly verb: 'add'; readonly kind: 'chain'; readonly chain: string; readonly base?: BaseChain } & TableRef)
  | ({ readonly verb: 'delete'; readonly kind: 'chain'; readonly chain: string } & TableRef)
  | ({ readonly verb: 'add'; readonly kind: 'rule'; readonly chain: string; readonly rule: string } & TableRef)
  | ({
      readonly verb: 'insert';
      readonly kind: 'rule';
      readonly chain: string;
      readonly rule: string;
      /** Insert before the rule at this 0-based position. */
      readonly index: number;
    } & TableRef);

export type Transaction = readonly Op[];

/** knftables.Concat: tokens joined by one space, no normalisation; a lone "@" takes no space after it. */
export function concat(tokens: readonly string[]): string {
  let out = '';
  tokens.forEach((t, i) => {
    out += t;
    if (i < tokens.length - 1 && t !== '@') out += ' ';
  });
  return out;
}

export function renderOp(op: Op): string {
  const where = `${op.family} ${op.table}`;
  switch (op.kind) {
    case 'table':
      return `${op.verb} table ${where}`;
    case 'chain': {
      if (op.verb === 'delete') return `delete chain ${where} ${op.chain}`;
      const base = op.base ? ` { type ${op.base.type} hook ${op.base.hook} priority ${op.base.priority} ; }` : '';
      return `add chain ${where} ${op.chain}${base}`;
    }
    case 'rule':
      return op.verb === 'insert' ? `insert rule ${where} ${op.chain} index ${op.index} ${op.rule}` : `add rule ${where} ${op.chain} ${op.rule}`;
    case 'set': {
      if (op.verb !== 'add') return `${op.verb} set ${where} ${op.set}`;
      const comment = op.comment !== undefined ? ` comment ${goQuote(op.comment)} ;` : '';
      return `add set ${where} ${op.set} { type ${op.type} ;${comment} }`;
    }
    case 'element': {
      const comment = op.verb === 'add' && op.comment !== undefined ? ` comment ${goQuote(op.comment)}` : '';
      return `${op.verb} element ${where} ${op.set} { ${op.key.join(' . ')}${comment} }`;
    }
  }
}

/**
 * A string literal as Go's %q writes it, which is how knftables quotes comments. Exact for ASCII
 * (backslash escapes for quote, backslash and control bytes); other characters are kept as they
 * are. nft's own scanner has no escapes, so callers keep quotes and backslashes out of comments
 * (pod UIDs are parsed to a plain charset before they get here).
 */
export function goQuote(s: string): string {
  const named: Record<string, string> = {
    '"': '\\"',
    '\\': '\\\\',
    '\x07': '\\a',
    '\b': '\\b',
    '\f': '\\f',
    '\n': '\\n',
    '\r': '\\r',
    '\t': '\\t',
    '\v': '\\v',
  };
  let out = '"';
  for (const ch of s) {
    const code = ch.codePointAt(0)!;
    if (named[ch] !== undefined) out += named[ch];
    else if (code < 0x20 || code === 0x7f) out += `\\x${code.toString(16).padStart(2, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

/** The transaction as nft script text: one operation per line, each ending in "\n". */
export function render(tx: Transaction): string {
  return tx.map((op) => `${renderOp(op)}\n`).join('');
}

/** Names of the tables a transaction touches, in first-seen order. */
export function tablesOf(tx: Transaction): TableRef[] {
  const seen = new Map<string, TableRef>();
  for (const op of tx) {
    const key = `${op.family} ${op.table}`;
    if (!seen.has(key)) seen.set(key, { family: op.family, table: op.table });
  }
  return [...seen.values()];
}
