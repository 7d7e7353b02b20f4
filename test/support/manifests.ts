// Our Kubernetes manifests (install/kubernetes/<profile>/*.yaml) parsed as the API server would
// take them: the chart comparison and the schema and RBAC checks read them this one way.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { PACKAGE_ROOT } from './conformance';

export const PROFILES = ['sidecar', 'ambient'] as const;
export type Profile = (typeof PROFILES)[number];

export const manifestDir = (p: Profile): string => path.join(PACKAGE_ROOT, 'install', 'kubernetes', p);

export interface ManifestDoc {
  /** `<profile>/<file>` it came from. */
  file: string;
  kind: string;
  apiVersion: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- a parsed YAML manifest, free-form; each test asserts the fields it reads
  [k: string]: any;
}

/** Every document of the profile's YAML files, in file order; a YAML error fails the test. */
export function loadManifests(p: Profile): ManifestDoc[] {
  const dir = manifestDir(p);
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .flatMap((f) =>
      YAML.parseAllDocuments(fs.readFileSync(path.join(dir, f), 'utf8')).map((d) => {
        assert.deepEqual(d.errors, [], `${p}/${f}: YAML errors`);
        return { ...(d.toJS() as ManifestDoc), file: `${p}/${f}` };
      }),
    );
}
