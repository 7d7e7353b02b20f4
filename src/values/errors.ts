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
    super(`invalid ${source} ${JSON.stringify(printable(value))}: ${reason}`);
    this.name = 'InputError';
  }
}

// Keep one-line messages: long or multi-line values are shortened and escaped by JSON.stringify.
function printable(value: unknown): unknown {
  if (typeof value === 'string' && value.length > 200) return `${value.slice(0, 200)}…`;
  return value;
}
