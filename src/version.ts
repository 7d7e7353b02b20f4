// This build's identity, for the agent's start-up line and `install-cni version`. Istio prints
// "<version>-<git revision>-<build status>"; scripts/build-info.js stamps dist/build-info.json
// at `npm run build`, and without it the package version stands alone.
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface BuildInfo {
  version: string;
  gitRevision: string;
  buildStatus: string;
}

function readJson(file: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(fs.readFileSync(file, 'utf8')) as unknown;
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const str = (v: unknown, def: string) => (typeof v === 'string' && v !== '' ? v : def);

/** dist/src/version.js -> dist/build-info.json, else the package.json beside dist/. */
export function buildInfo(distDir = path.join(__dirname, '..')): BuildInfo {
  const stamped = readJson(path.join(distDir, 'build-info.json'));
  const pkg = readJson(path.join(distDir, '..', 'package.json'));
  return {
    version: str(stamped?.version, str(pkg?.version, 'unknown')),
    gitRevision: str(stamped?.gitRevision, 'unknown'),
    buildStatus: str(stamped?.buildStatus, 'unknown'),
  };
}

/** Istio's BuildInfo.String(). */
export const versionString = (b: BuildInfo): string => `${b.version}-${b.gitRevision}-${b.buildStatus}`;
