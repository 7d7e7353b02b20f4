// The plugin's log line: one JSON object per line in the layout Istio's zap JSON encoder gives
// the CNI plugin (level, time with microseconds in UTC, msg, then the entry's own fields), so
// the node agent's log.sock relay, log collectors and people reading istio-cni.log see the same
// thing from our plugin as from Istio's.

export type EntryLevel = 'debug' | 'info' | 'warn' | 'error';

/** Istio's log timestamp: RFC 3339 in UTC with six fractional digits (Date has milliseconds). */
export function istioTimestamp(d: Date): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

const RESERVED = new Set(['level', 'time', 'msg']);

function fieldValue(v: unknown): unknown {
  if (v instanceof Error) return v.message;
  if (typeof v === 'bigint') return v.toString();
  return v;
}

/** One log line (without the newline). Fields named level, time or msg are prefixed with "field." rather than dropped. */
export function encodeEntry(level: EntryLevel, time: Date, msg: string, fields?: Record<string, unknown>): string {
  const out: Record<string, unknown> = { level, time: istioTimestamp(time), msg };
  if (fields) {
    for (const [k, v] of Object.entries(fields)) {
      if (v === undefined) continue;
      out[RESERVED.has(k) ? `field.${k}` : k] = fieldValue(v);
    }
  }
  try {
    return JSON.stringify(out);
  } catch {
    // A field that cannot be encoded (a cycle) must not cost the entry.
    return JSON.stringify({ level, time: out.time, msg, logError: 'fields could not be encoded' });
  }
}

/**
 * Secrets that must never reach a log (the kubeconfig's bearer token). Every line is scrubbed
 * before it is written anywhere; both the raw text and its JSON-escaped form are replaced.
 */
export class Redactor {
  private readonly secrets: string[] = [];

  add(secret: string | undefined): void {
    // Very short strings would blank out ordinary words; real tokens are long.
    if (!secret || secret.length < 6) return;
    for (const s of [secret, JSON.stringify(secret).slice(1, -1)]) {
      if (!this.secrets.includes(s)) this.secrets.push(s);
    }
    this.secrets.sort((a, b) => b.length - a.length);
  }

  scrub(text: string): string {
    let out = text;
    for (const s of this.secrets) if (out.includes(s)) out = out.split(s).join('[redacted]');
    return out;
  }
}
