// The one level table: the levels an entry can have, the thresholds a logger can be set to
// (Istio's: debug info warn error fatal none), and the per-scope thresholds of
// `--log_output_level` (Istio's pkg/log processLevels).
import { InputError } from '../values/errors';

/** Thresholds, lowest first; an entry passes a threshold of equal or lower rank. */
export const LEVEL_RANK = { debug: 0, info: 1, warn: 2, error: 3, fatal: 4, none: 5 } as const;
export type Threshold = keyof typeof LEVEL_RANK;
export const THRESHOLDS = Object.keys(LEVEL_RANK) as readonly Threshold[];

/** The levels an entry is written at (nothing here logs at fatal). */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export const LOG_LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];

export const isLogLevel = (s: unknown): s is LogLevel => typeof s === 'string' && (LOG_LEVELS as readonly string[]).includes(s);
export const isThreshold = (s: unknown): s is Threshold => typeof s === 'string' && Object.hasOwn(LEVEL_RANK, s);

export function passes(level: LogLevel, threshold: Threshold): boolean {
  return LEVEL_RANK[level] >= LEVEL_RANK[threshold];
}

export const DEFAULT_SCOPE = 'default';
/** Istio's override scope: `all:<level>` sets every scope. */
export const ALL_SCOPES = 'all';

/**
 * A threshold per scope. A scope that was never named follows `default` (in Istio each scope
 * starts at info and `default:` sets only the default scope; here a bare `debug` reaches the
 * whole agent, which is what an operator typing it wants).
 */
export class ScopeLevels {
  private readonly named = new Map<string, Threshold>();

  constructor(private fallback: Threshold = 'info') {}

  of(scope: string): Threshold {
    return this.named.get(scope) ?? this.fallback;
  }

  enabled(scope: string, level: LogLevel): boolean {
    return passes(level, this.of(scope));
  }

  set(scope: string, level: Threshold): void {
    if (scope === DEFAULT_SCOPE) this.fallback = level;
    else if (scope === ALL_SCOPES) {
      this.fallback = level;
      this.named.clear();
    } else this.named.set(scope, level);
  }

  /** The scopes named explicitly, for the start-up line. */
  describe(): string {
    return [`${DEFAULT_SCOPE}:${this.fallback}`, ...[...this.named].map(([s, l]) => `${s}:${l}`)].join(',');
  }
}

/**
 * Applies `<scope>:<level>,<scope>:<level>,...` (a bare `<level>` means the default scope) in
 * order, as Istio's processLevels does. Istio logs a malformed value and carries on with its
 * defaults; here it is an InputError naming `source` (exit 2), so a typo cannot hide.
 */
export function applyOutputLevels(levels: ScopeLevels, source: string, text: string): void {
  for (const item of text.split(',')) {
    const parts = item.split(':');
    if (parts.length > 2) throw new InputError(source, text, `invalid output level format "${item}": expected <scope>:<level>`);
    const [scope, level] = parts.length === 1 ? [DEFAULT_SCOPE, parts[0]] : [parts[0], parts[1]];
    if (scope === '' || /[.\s]/.test(scope)) throw new InputError(source, text, `invalid scope "${scope}" in "${item}"`);
    if (!isThreshold(level)) throw new InputError(source, text, `invalid output level "${level}": expected one of ${THRESHOLDS.join(', ')}`);
    levels.set(scope, level);
  }
}

/** A comma-separated scope list (`--log_caller`): each name, or `all`. */
export function parseScopeList(source: string, text: string): Set<string> {
  const out = new Set<string>();
  for (const s of text.split(',')) {
    if (s === '') continue;
    if (/[.:\s]/.test(s)) throw new InputError(source, text, `invalid scope "${s}"`);
    out.add(s);
  }
  return out;
}
