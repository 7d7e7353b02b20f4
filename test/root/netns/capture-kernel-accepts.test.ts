// Every capture golden transaction, as we render it, must be accepted by the real kernel.
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { buildCapture } from '../../../src/capture/build';
import { parseCaptureConfig } from '../../../src/capture/config';
import { render } from '../../../src/nft/transaction';
import { loadSuite } from '../../support/conformance';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { makeNetns, requireRootAndTools } from '../../support/root';
import { tempDir } from '../../support/tmp';

const cases = loadSuite('capture');
let ns: ReturnType<typeof makeNetns>;
let groupFile: string;

// Two goldens name groups ("java", "ftp") that a test host may lack, and nft resolves group names
// when it parses. Those run in a private mount namespace whose /etc/group has them.
before(() => {
  requireRootAndTools('ip', 'nft', 'unshare');
  ns = makeNetns('kernel');
  const dir = tempDir(path.join(os.tmpdir(), 'icts-group-'));
  groupFile = path.join(dir, 'group');
  fs.writeFileSync(groupFile, `${fs.readFileSync('/etc/group', 'utf8')}java:x:30001:\nftp:x:30002:\n`);
});
after(() => {
  ns?.remove();
  if (groupFile) fs.rmSync(path.dirname(groupFile), { recursive: true, force: true });
});

function inNetns(name: string, cmd: string[], input?: string): string {
  const script = 'mount --bind "$0" /etc/group && exec ip netns exec "$@"';
  const r = spawnSync('unshare', ['-m', 'sh', '-c', script, groupFile, name, ...cmd], { encoding: 'utf8', input });
  if (r.status !== 0) throw new Error(`${cmd.join(' ')} in ${name} failed: ${r.stderr}`);
  return r.stdout;
}

for (const c of cases) {
  test(`capture/${c.case}: nft applies the transaction in a fresh netns`, () => {
    const text = render(buildCapture(parseCaptureConfig(c.input)));
    inNetns(ns.name, ['nft', '-c', '-f', '-'], text);
    // Apply for real too, then remove, so the next case starts clean.
    inNetns(ns.name, ['nft', '-f', '-'], text);
    const listed = inNetns(ns.name, ['nft', 'list', 'tables']);
    for (const t of ['istio-proxy-nat', 'istio-proxy-mangle', 'istio-proxy-raw']) {
      assert.equal(listed.includes(`table inet ${t}\n`), text.includes(`add table inet ${t}\n`), t);
    }
    inNetns(ns.name, ['nft', 'flush', 'ruleset']);
  });
}
