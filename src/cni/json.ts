// Reading JSON objects the way Go's encoding/json fills a struct, so a config that works with
// Istio's Go plugin reads the same here: key names match case-insensitively (an exact match is
// not required), the last matching key wins, and null means "not set".

export type JsonObject = Record<string, unknown>;

export function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The value a Go struct field tagged `key` would receive; undefined when absent or null. */
export function field(obj: JsonObject, key: string): unknown {
  const want = key.toLowerCase();
  let found: unknown;
  for (const k of Object.keys(obj)) {
    if (k.toLowerCase() === want) found = obj[k];
  }
  return found === null ? undefined : found;
}

/** A copy of obj without any key that matches `key` case-insensitively. */
export function withoutField(obj: JsonObject, key: string): JsonObject {
  const want = key.toLowerCase();
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(obj)) if (k.toLowerCase() !== want) out[k] = v;
  return out;
}

/** JSON type name for messages. */
export function jsonType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}
