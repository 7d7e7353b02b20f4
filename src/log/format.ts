// How an entry becomes a line, in Istio's two layouts (pkg/log on zap):
//   text: 2024-01-01T00:00:00.000000Z<TAB>info<TAB>scope<TAB>message<TAB>key=value key=value
//   JSON: {"level":"info","time":"2024-01-01T00:00:00.000000Z","scope":"scope","msg":"message","key":"value"}
// The default scope has no scope column or key (zap omits an empty logger name); that is how the
// CNI plugin's own lines look. Text fields are printed as Go's fmt.Sprint prints them for
// strings and numbers (raw); objects and arrays as JSON.
//
// Rendering never throws, whatever a field holds (cycles, BigInt, getters that throw, revoked
// proxies, 200,000-level arrays): values are copied into plain JSON data first, at most
// LIMITS.depth levels deep and LIMITS.fieldBytes long; a line keeps the fields that fit in
// LIMITS.lineBytes and says how many it left out.
import { quote } from '../values/errors';
import { LogLevel } from './levels';

export type LogFields = Record<string, unknown>;

export const LIMITS = { depth: 16, fieldBytes: 4096, lineBytes: 16384 } as const;

export interface LogRecord {
  readonly level: LogLevel;
  /** A Date, or a time already in Istio's layout (a relayed plugin line keeps its own). */
  readonly time: Date | string;
  /** Undefined or "default": no scope column. */
  readonly scope?: string;
  readonly msg: string;
  readonly fields?: LogFields;
  /** file:line of the call, with --log_caller. */
  readonly caller?: string;
  /** A stack trace, with --log_stacktrace_level. */
  readonly stack?: string;
}

const pad = (n: number, w = 2) => String(n).padStart(w, '0');

/** Istio's log timestamp: UTC with six fractional digits (a Date has milliseconds). */
export function istioTimestamp(d: Date): string {
  if (Number.isNaN(d.getTime())) return '0001-01-01T00:00:00.000000Z';
  return (
    `${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}T` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3)}000Z`
  );
}

// ---------------------------------------------------------------------------------------------
// Values: anything -> plain JSON data, bounded.

export type Plain = null | boolean | number | string | Plain[] | { [k: string]: Plain };
/** Why a value was cut: nested deeper than LIMITS.depth, or longer than LIMITS.fieldBytes. */
export type Clip = 'too_deep' | 'too_large' | 'unreadable';

interface Walk {
  /** Characters still allowed; below zero the value is cut. */
  left: number;
  clip?: Clip;
  readonly ancestors: Set<object>;
}

const cut = (w: Walk, why: Clip, placeholder: string): string => {
  w.clip ??= why;
  return placeholder;
};

function plainOf(v: unknown, depth: number, w: Walk): Plain {
  if (w.left < 0) return cut(w, 'too_large', '…');
  switch (typeof v) {
    case 'string':
      w.left -= v.length + 2;
      return w.left < 0 ? cut(w, 'too_large', `${v.slice(0, Math.max(0, v.length + w.left))}…`) : v;
    case 'number':
      w.left -= 8;
      return Number.isFinite(v) ? v : String(v);
    case 'boolean':
      w.left -= 5;
      return v;
    case 'bigint':
      return plainOf(v.toString(), depth, w);
    case 'undefined':
      w.left -= 4;
      return null;
    case 'symbol':
      return plainOf(v.toString(), depth, w);
    case 'function':
      return plainOf(`[function ${v.name || 'anonymous'}]`, depth, w);
  }
  if (v === null) {
    w.left -= 4;
    return null;
  }
  const o = v as object;
  if (o instanceof Error) return plainOf(o.message, depth, w);
  if (o instanceof Date) return plainOf(Number.isNaN(o.getTime()) ? 'Invalid Date' : o.toISOString(), depth, w);
  if (ArrayBuffer.isView(o)) return plainOf(`[${o.constructor.name} ${o.byteLength} bytes]`, depth, w);
  if (depth >= LIMITS.depth) return cut(w, 'too_deep', '[too deep]');
  if (w.ancestors.has(o)) return plainOf('[circular]', depth, w);
  w.ancestors.add(o);
  try {
    if (Array.isArray(o)) {
      const out: Plain[] = [];
      w.left -= 2;
      for (let i = 0; i < o.length && w.left >= 0; i++) {
        let item: unknown;
        try {
          item = o[i];
        } catch {
          item = '[unreadable]';
        }
        out.push(plainOf(item, depth + 1, w));
        w.left -= 1;
      }
      if (out.length < o.length) cut(w, 'too_large', '');
      return out;
    }
    const out: { [k: string]: Plain } = {};
    w.left -= 2;
    for (const k of Object.keys(o)) {
      if (w.left < 0) {
        cut(w, 'too_large', '');
        return out;
      }
      let item: unknown;
      try {
        item = (o as Record<string, unknown>)[k];
      } catch {
        item = '[unreadable]';
      }
      if (item === undefined) continue;
      w.left -= k.length + 4;
      Object.defineProperty(out, k, { value: plainOf(item, depth + 1, w), enumerable: true, writable: true, configurable: true });
    }
    return out;
  } finally {
    w.ancestors.delete(o);
  }
}

/**
 * A field value as plain JSON data, and why it was cut (if it was). Never throws: a getter,
 * proxy trap or toString that throws makes the value "[unreadable]".
 */
export function plainValue(v: unknown, maxChars: number = LIMITS.fieldBytes): { value: Plain; clip?: Clip } {
  const w: Walk = { left: maxChars, ancestors: new Set() };
  try {
    const value = plainOf(v, 0, w);
    return { value, clip: w.clip };
  } catch {
    return { value: '[unreadable]', clip: 'unreadable' };
  }
}

// ---------------------------------------------------------------------------------------------
// Lines.

const RESERVED = new Set(['level', 'time', 'scope', 'caller', 'msg', 'stack']);
// Control characters are exactly what this pattern is for (they make a value quoted).
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

/** A field value as text: Go's fmt.Sprint for scalars (strings raw unless they hold control characters), JSON otherwise. */
function textOf(v: Plain): string {
  if (typeof v === 'string') return CONTROL.test(v) ? quote(v) : v;
  if (v === null) return '<nil>';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

function textKey(k: string): string {
  return k === '' || CONTROL.test(k) || /[\s=]/.test(k) ? quote(k) : k;
}

function clipMsg(msg: string): string {
  const max = LIMITS.lineBytes / 2;
  return msg.length > max ? `${msg.slice(0, max)}…` : msg;
}

/** The fields that fit in the line's budget, as [key, plain value] pairs; an Error counts as its message. */
function fieldsOf(fields: LogFields | undefined, budget: number): { kept: [string, Plain][]; dropped: number } {
  const kept: [string, Plain][] = [];
  let dropped = 0;
  let left = budget;
  if (!fields) return { kept, dropped };
  let keys: string[];
  try {
    keys = Object.keys(fields);
  } catch {
    return { kept: [['logError', 'fields could not be read']], dropped };
  }
  for (const k of keys) {
    let raw: unknown;
    try {
      raw = fields[k];
    } catch {
      raw = '[unreadable]';
    }
    if (raw === undefined) continue;
    const { value } = plainValue(raw);
    const size = JSON.stringify(value).length + k.length + 4;
    if (size > left) {
      dropped++;
      continue;
    }
    left -= size;
    kept.push([RESERVED.has(k) ? `field.${k}` : k, value]);
  }
  return { kept, dropped };
}

const timeOf = (t: Date | string) => (typeof t === 'string' ? t : istioTimestamp(t));

/** Istio's JSON layout (zap's JSON encoder: level, time, scope, caller, msg, fields, stack). */
export function renderJson(r: LogRecord): string {
  const parts = [`"level":${JSON.stringify(r.level)}`, `"time":${JSON.stringify(timeOf(r.time))}`];
  if (r.scope && r.scope !== 'default') parts.push(`"scope":${JSON.stringify(r.scope)}`);
  if (r.caller) parts.push(`"caller":${JSON.stringify(r.caller)}`);
  const msg = clipMsg(r.msg);
  parts.push(`"msg":${JSON.stringify(msg)}`);
  const { kept, dropped } = fieldsOf(r.fields, LIMITS.lineBytes - msg.length - 128);
  for (const [k, v] of kept) parts.push(`${JSON.stringify(k)}:${JSON.stringify(v)}`);
  if (dropped > 0) parts.push(`"fieldsDropped":${dropped}`);
  if (r.stack) parts.push(`"stack":${JSON.stringify(r.stack)}`);
  return `{${parts.join(',')}}`;
}

/** Istio's console layout: tab-separated time, level, scope, caller, message, then key=value pairs; a stack on the next lines. */
export function renderText(r: LogRecord): string {
  const cols = [timeOf(r.time), r.level];
  if (r.scope && r.scope !== 'default') cols.push(r.scope);
  if (r.caller) cols.push(r.caller);
  // A message's own line breaks stay visibly part of the entry.
  const msg = clipMsg(r.msg).replace(/\r?\n/g, '\n\t');
  cols.push(msg);
  const { kept, dropped } = fieldsOf(r.fields, LIMITS.lineBytes - msg.length - 128);
  const kv = kept.map(([k, v]) => `${textKey(k)}=${textOf(v)}`);
  if (dropped > 0) kv.push(`fieldsDropped=${dropped}`);
  let line = cols.join('\t');
  if (kv.length > 0) line += `\t${kv.join(' ')}`;
  if (r.stack) line += `\n${r.stack}`;
  return line;
}

/** The CNI plugin's line: Istio's JSON layout in the default scope (the plugin has no scopes). */
export function encodeEntry(level: LogLevel, time: Date, msg: string, fields?: LogFields): string {
  return renderJson({ level, time, msg, fields });
}
