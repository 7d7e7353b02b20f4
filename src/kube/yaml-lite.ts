// A small YAML reader for the kubeconfig subset: block mappings and sequences (including the
// "- key: value" compact form and sequences at their key's indentation, as Go's yaml emitter
// writes them), plain, single- and double-quoted scalars, empty flow collections, comments.
// JSON input is read with JSON.parse. Anything else (anchors, tags, block scalars, flow
// collections with content) is refused with the line number, never guessed at.
//
// Why not a general YAML library: the plugin runs once per pod start and loading one measured
// ~60 ms here, more than the rest of a plugin run. A kubeconfig needs none of it.

export type YamlValue = string | boolean | null | YamlValue[] | { [k: string]: YamlValue };

export class YamlError extends Error {
  constructor(line: number, why: string) {
    super(`line ${line}: ${why}`);
    this.name = 'YamlError';
  }
}

interface Line {
  readonly no: number;
  readonly indent: number;
  readonly text: string;
}

export function parseYamlLite(src: string): YamlValue {
  const trimmed = src.trim();
  if (trimmed.startsWith('{')) {
    try {
      return JSON.parse(trimmed) as YamlValue;
    } catch (e) {
      throw new YamlError(1, `invalid JSON: ${(e as Error).message}`);
    }
  }
  const lines = toLines(src);
  if (lines.length === 0) return null;
  const p = new Parser(lines);
  const v = p.node(0);
  if (p.pos < p.lines.length) throw new YamlError(p.lines[p.pos].no, 'unexpected indentation');
  return v;
}

function toLines(src: string): Line[] {
  const out: Line[] = [];
  src.split(/\r?\n/).forEach((raw, i) => {
    const no = i + 1;
    const m = /^( *)(.*)$/.exec(raw)!;
    if (m[2].startsWith('\t')) throw new YamlError(no, 'tabs are not allowed for indentation');
    const text = stripComment(m[2], no).trimEnd();
    if (text === '') return;
    if (out.length === 0 && (text === '---' || text.startsWith('%'))) {
      if (text.startsWith('%')) throw new YamlError(no, 'directives are not supported');
      return;
    }
    if (text === '---' || text === '...') throw new YamlError(no, 'only one document is supported');
    out.push({ no, indent: m[1].length, text });
  });
  return out;
}

/** Drops a "# ..." comment that starts the line or follows whitespace, outside quotes. */
function stripComment(s: string, no: number): string {
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (quote === '"') {
      if (c === '\\') i++;
      else if (c === '"') quote = undefined;
    } else if (quote === "'") {
      if (c === "'") {
        if (s[i + 1] === "'") i++;
        else quote = undefined;
      }
    } else if ((c === '"' || c === "'") && (i === 0 || /[\s:\-[{,]/.test(s[i - 1]))) {
      quote = c;
    } else if (c === '#' && (i === 0 || /\s/.test(s[i - 1]))) {
      return s.slice(0, i);
    }
  }
  if (quote) throw new YamlError(no, 'unterminated quoted string (multi-line scalars are not supported)');
  return s;
}

class Parser {
  pos = 0;
  constructor(readonly lines: Line[]) {}

  private get cur(): Line | undefined {
    return this.lines[this.pos];
  }

  /** The node starting at the current line, which must be indented at least `min`. */
  node(min: number): YamlValue {
    const l = this.cur;
    if (!l || l.indent < min) return null;
    return isSeqItem(l.text) ? this.seq(l.indent) : this.map(l.indent);
  }

  private seq(indent: number): YamlValue[] {
    const out: YamlValue[] = [];
    while (this.cur && this.cur.indent === indent && isSeqItem(this.cur.text)) {
      const l = this.cur;
      const rest = l.text.slice(1).replace(/^ +/, '');
      if (rest === '') {
        this.pos++;
        out.push(this.cur && this.cur.indent > indent ? this.node(indent + 1) : null);
        continue;
      }
      const restIndent = indent + (l.text.length - rest.length);
      if (isSeqItem(rest) || splitKey(rest, l.no)) {
        // "- key: v" (or "- - x"): a nested block whose first line starts after the dash.
        this.lines[this.pos] = { no: l.no, indent: restIndent, text: rest };
        out.push(this.node(restIndent));
      } else {
        out.push(scalar(rest, l.no));
        this.pos++;
      }
    }
    return out;
  }

  private map(indent: number): { [k: string]: YamlValue } {
    const out: { [k: string]: YamlValue } = {};
    while (this.cur && this.cur.indent === indent && !isSeqItem(this.cur.text)) {
      const l = this.cur;
      const kv = splitKey(l.text, l.no);
      if (!kv) throw new YamlError(l.no, `expected "key: value", got ${JSON.stringify(l.text.slice(0, 40))}`);
      const [key, value] = kv;
      if (Object.prototype.hasOwnProperty.call(out, key)) throw new YamlError(l.no, `duplicate key ${JSON.stringify(key)}`);
      this.pos++;
      if (value !== '') {
        out[key] = scalar(value, l.no);
      } else if (this.cur && this.cur.indent > indent) {
        out[key] = this.node(indent + 1);
      } else if (this.cur && this.cur.indent === indent && isSeqItem(this.cur.text)) {
        out[key] = this.seq(indent);
      } else {
        out[key] = null;
      }
    }
    if (this.cur && this.cur.indent > indent) throw new YamlError(this.cur.no, 'unexpected indentation');
    return out;
  }
}

function isSeqItem(text: string): boolean {
  return text === '-' || text.startsWith('- ');
}

/** "key: value" / "key:" → [key, value]; undefined when the line is not a mapping entry. */
function splitKey(text: string, no: number): [string, string] | undefined {
  let end: number;
  let key: string;
  if (text.startsWith('"') || text.startsWith("'")) {
    end = quotedEnd(text, no);
    key = scalar(text.slice(0, end), no) as string;
    if (text[end] !== ':') return undefined;
  } else {
    const m = /:( |$)/.exec(text);
    if (!m) return undefined;
    end = m.index;
    key = text.slice(0, end).trim();
    if (/^[[{&*!|>%@`]/.test(key)) throw new YamlError(no, `unsupported YAML syntax in key ${JSON.stringify(key)}`);
  }
  const rest = text.slice(end + 1);
  if (rest !== '' && !rest.startsWith(' ')) return undefined;
  return [key, rest.trim()];
}

/** Index just past the closing quote of the quoted scalar that starts `text`. */
function quotedEnd(text: string, no: number): number {
  const q = text[0];
  for (let i = 1; i < text.length; i++) {
    if (q === '"' && text[i] === '\\') i++;
    else if (text[i] === q) {
      if (q === "'" && text[i + 1] === "'") i++;
      else return i + 1;
    }
  }
  throw new YamlError(no, 'unterminated quoted string');
}

function scalar(text: string, no: number): YamlValue {
  if (text.startsWith('"')) {
    const end = quotedEnd(text, no);
    if (text.slice(end).trim() !== '') throw new YamlError(no, 'text after a quoted string');
    try {
      // YAML's double-quoted escapes that matter here are JSON's; "\/" and the rest agree.
      return JSON.parse(text.slice(0, end)) as string;
    } catch {
      throw new YamlError(no, 'unsupported escape in a double-quoted string');
    }
  }
  if (text.startsWith("'")) {
    const end = quotedEnd(text, no);
    if (text.slice(end).trim() !== '') throw new YamlError(no, 'text after a quoted string');
    return text.slice(1, end - 1).replace(/''/g, "'");
  }
  if (text === '{}') return {};
  if (text === '[]') return [];
  if (/^[[{&*!|>%@`]/.test(text)) throw new YamlError(no, `unsupported YAML syntax ${JSON.stringify(text.slice(0, 20))}`);
  if (/^(true|True|TRUE)$/.test(text)) return true;
  if (/^(false|False|FALSE)$/.test(text)) return false;
  if (/^(null|Null|NULL|~)$/.test(text)) return null;
  return text;
}
