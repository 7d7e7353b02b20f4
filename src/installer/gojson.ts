// Go encoding/json compatibility for the CNI config files the installer rewrites.
//
// Istio reads the node's CNI config into a Go `map[string]any`, edits it, and writes it back
// with `json.MarshalIndent(v, "", "  ")`. Files we write must be byte-identical to that, so this
// module reproduces the observable parts of Go's encoder:
//   * map keys are sorted (bytewise, as Go compares strings), struct fields keep their order;
//   * `<`, `>` and `&` are written as \u003c, \u003e, \u0026, U+2028/U+2029 as escapes, other
//     control characters as \b \f \n \r \t or \u00XX;
//   * numbers went through float64: JS numbers are float64 too, and Number#toString picks the
//     same shortest digits and the same exponent thresholds (1e-6, 1e21) as Go; only -0 differs;
//   * empty objects and arrays stay `{}` and `[]`, a nil slice is `null`.

/** A JSON value as Go's `any` holds it after json.Unmarshal. */
export type JsonValue = null | boolean | number | string | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

/** A Go struct: fields are written in this order (not sorted), as json.Marshal does for structs. */
export class GoStruct {
  constructor(readonly fields: ReadonlyArray<readonly [string, unknown]>) {}
}

export class GoJsonError extends Error {
  override name = 'GoJsonError';
}

/**
 * json.Unmarshal into `any`. The grammar is the same as JSON.parse; Go additionally refuses
 * numbers that do not fit a float64 (JSON.parse would give Infinity).
 */
export function parseGoJson(text: string): JsonValue {
  let value: JsonValue;
  try {
    value = JSON.parse(text, (_k, v: unknown) => {
      if (typeof v === 'number' && !Number.isFinite(v)) throw new GoJsonError('number out of float64 range');
      return v;
    }) as JsonValue;
  } catch (e) {
    if (e instanceof GoJsonError) throw e;
    throw new GoJsonError((e as Error).message);
  }
  return value;
}

export function isJsonObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof GoStruct);
}

/** An object built from entries without ever assigning through `obj[key]` (so "__proto__" stays a key). */
export function objectFrom(entries: Iterable<readonly [string, JsonValue]>): JsonObject {
  return Object.fromEntries(entries) as JsonObject;
}

/** A copy of `obj` without `key`. */
export function without(obj: JsonObject, key: string): JsonObject {
  return objectFrom(Object.entries(obj).filter(([k]) => k !== key));
}

export function hasOwn(obj: object, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(obj, key);
}

/** json.MarshalIndent(v, "", "  "), without the trailing newline callers add. */
export function marshalIndent(v: unknown): string {
  const out: string[] = [];
  write(v, '', out);
  return out.join('');
}

/** Go's string ordering: bytewise on UTF-8. */
export function compareGoStrings(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

const INDENT = '  ';

function write(v: unknown, indent: string, out: string[]): void {
  if (v === null || v === undefined) {
    out.push('null');
  } else if (typeof v === 'boolean') {
    out.push(v ? 'true' : 'false');
  } else if (typeof v === 'number') {
    out.push(formatNumber(v));
  } else if (typeof v === 'string') {
    out.push(quote(v));
  } else if (Array.isArray(v)) {
    if (v.length === 0) {
      out.push('[]');
      return;
    }
    const inner = indent + INDENT;
    out.push('[');
    v.forEach((item, i) => {
      out.push(i === 0 ? '\n' : ',\n', inner);
      write(item, inner, out);
    });
    out.push('\n', indent, ']');
  } else if (v instanceof GoStruct) {
    writeFields(v.fields, indent, out);
  } else if (typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>).sort(([a], [b]) => compareGoStrings(a, b));
    writeFields(entries, indent, out);
  } else {
    throw new GoJsonError(`unsupported value of type ${typeof v}`);
  }
}

function writeFields(fields: ReadonlyArray<readonly [string, unknown]>, indent: string, out: string[]): void {
  if (fields.length === 0) {
    out.push('{}');
    return;
  }
  const inner = indent + INDENT;
  out.push('{');
  fields.forEach(([k, val], i) => {
    out.push(i === 0 ? '\n' : ',\n', inner, quote(k), ': ');
    write(val, inner, out);
  });
  out.push('\n', indent, '}');
}

function formatNumber(n: number): string {
  if (!Number.isFinite(n)) throw new GoJsonError(`unsupported value: ${n}`);
  if (Object.is(n, -0)) return '-0';
  // Same shortest round-trip digits and the same switch to exponent form as Go's float64 encoder.
  return String(n);
}

const HEX = '0123456789abcdef';

/** Go's encodeState.string with HTML escaping on (the MarshalIndent default). */
export function quote(s: string): string {
  let out = '"';
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    let esc: string | undefined;
    if (c < 0x20 || c === 0x22 || c === 0x5c || c === 0x3c || c === 0x3e || c === 0x26) {
      switch (c) {
        case 0x22:
          esc = '\\"';
          break;
        case 0x5c:
          esc = '\\\\';
          break;
        case 0x08:
          esc = '\\b';
          break;
        case 0x0c:
          esc = '\\f';
          break;
        case 0x0a:
          esc = '\\n';
          break;
        case 0x0d:
          esc = '\\r';
          break;
        case 0x09:
          esc = '\\t';
          break;
        default:
          esc = `\\u00${HEX[c >> 4]}${HEX[c & 0xf]}`;
      }
    } else if (c === 0x2028 || c === 0x2029) {
      esc = c === 0x2028 ? '\\u2028' : '\\u2029';
    } else if (c >= 0xd800 && c <= 0xdfff) {
      // A lone surrogate cannot be UTF-8; Go writes U+FFFD for invalid input.
      const pair = c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00;
      if (pair) {
        i++;
        continue;
      }
      esc = '\ufffd';
    }
    if (esc !== undefined) {
      out += s.slice(start, i) + esc;
      start = i + 1;
    }
  }
  return out + s.slice(start) + '"';
}
