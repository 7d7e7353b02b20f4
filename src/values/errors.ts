/**
 * A value from outside (flag, config key, annotation, env var) that could not be parsed.
 * `source` names where it came from, so the message tells the user what to fix.
 */
export class InputError extends Error {
  constructor(
    readonly source: string,
    readonly value: unknown,
    readonly reason: string,
  ) {
    super(`invalid ${source} ${quote(printable(value))}: ${reason}`);
    this.name = 'InputError';
  }
}

// Keep one-line messages: long or multi-line values are shortened and escaped by JSON.stringify.
function printable(value: unknown): unknown {
  if (typeof value === 'string' && value.length > 200) return `${value.slice(0, 200)}…`;
  return value;
}

/**
 * JSON.stringify, plus escapes for what it leaves raw but a log reader or terminal takes as a line
 * break or a reordering: DEL and C1 controls (U+0085 NEL), U+2028/U+2029, bidi controls.
 */
export function quote(value: unknown): string {
  const json = JSON.stringify(value);
  if (json === undefined) return String(json);
  return json.replace(/[\u007f-\u009f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
