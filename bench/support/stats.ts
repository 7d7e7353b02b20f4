// Order statistics and the machine a figure came from.
import * as fs from 'node:fs';
import * as os from 'node:os';

/** Linear-interpolated quantile (q in [0, 1]) of a non-empty sample. */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const at = (s.length - 1) * q;
  const lo = Math.floor(at);
  return s[lo] + (s[Math.ceil(at)] - s[lo]) * (at - lo);
}

export const median = (xs: readonly number[]) => quantile(xs, 0.5);
export const p90 = (xs: readonly number[]) => quantile(xs, 0.9);

/** The 1, 5 and 15 minute load averages, as /proc/loadavg has them. */
export function load(): string {
  return fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
}

/** Kernel, cores and CPU model, for the line every report starts with. */
export function machine(): string {
  const cpus = os.cpus();
  return `Linux ${os.release()}, ${cpus.length} cores (${cpus[0]?.model.trim() ?? '?'}), Node ${process.version}`;
}

export const ms = (x: number) => `${x.toFixed(1)} ms`;
export const ratio = (x: number) => `${x.toFixed(2)}x`;
