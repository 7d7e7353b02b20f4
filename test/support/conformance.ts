// Loads Istio's golden cases from $ISTIO_CONFORMANCE_DIR (default ../shared/conformance).
import * as fs from 'node:fs';
import * as path from 'node:path';

export const PACKAGE_ROOT = findPackageRoot(__dirname);

function findPackageRoot(dir: string): string {
  for (let d = dir; ; d = path.dirname(d)) {
    if (fs.existsSync(path.join(d, 'package.json'))) return d;
    if (path.dirname(d) === d) throw new Error(`no package.json above ${dir}`);
  }
}

export const CONFORMANCE_DIR = path.resolve(PACKAGE_ROOT, process.env.ISTIO_CONFORMANCE_DIR ?? path.join('..', 'shared', 'conformance'));

export interface Case {
  suite: string;
  case: string;
  // Golden inputs are free-form JSON of each suite's own shape; the parsers under test
  // (parseCaptureConfig, parseAmbientConfig, ...) validate what they read.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- see above
  input: any;
  argv?: string[];
  expected: string | null;
  expectError?: boolean;
  compare: string;
  /** install suite: the config file's name under the CNI net dir. */
  expectedPath?: string;
  [k: string]: unknown;
}

/**
 * Every case of a suite. When the directory is missing the caller is told plainly; under CI
 * (CI=true) that is a failure, not a silent pass.
 */
export function loadSuite(suite: string): Case[] {
  const dir = path.join(CONFORMANCE_DIR, suite);
  if (!fs.existsSync(dir)) {
    const msg = `conformance suite "${suite}" not found at ${dir} (set ISTIO_CONFORMANCE_DIR)`;
    if (process.env.CI === 'true') throw new Error(msg);
    process.stderr.write(`WARNING: ${msg}; its cases are not run\n`);
    return [];
  }
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as Case);
}

/** Go's strings.TrimSpace on ASCII text, as the conformance README specifies for comparisons. */
export function trimSpace(s: string): string {
  return s.replace(/^[ \t\n\v\f\r]+|[ \t\n\v\f\r]+$/g, '');
}
