// `npm run demo` (dist/src/demo/demo.js, which the script runs after building): it passes on
// this machine, and it leaves nothing behind, whether it passes, fails or is interrupted.
import { before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PACKAGE_ROOT } from '../../support/conformance';
import { requireRootAndTools } from '../../support/root';

const DEMO = path.join(PACKAGE_ROOT, 'dist', 'src', 'demo', 'demo.js');

before(() => requireRootAndTools('ip', 'nft', 'openssl'));

interface DemoRun {
  code: number | null;
  out: string;
}

function runDemo(args: string[] = [], interruptWhen?: RegExp): Promise<DemoRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [DEMO, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' },
    });
    let out = '';
    let sent = false;
    const onData = (d: Buffer) => {
      out += d;
      if (interruptWhen && !sent && interruptWhen.test(out)) {
        sent = true;
        child.kill('SIGINT');
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
  });
}

/** What the demo created, from its own output, and whether any of it is still there. */
function leftovers(out: string): string[] {
  const names = [...out.matchAll(/netns (icts-demo-[a-z]+-\d+)/g)].map((m) => m[1]);
  assert.ok(names.length >= 2, `the demo named its namespaces: ${out}`);
  const work = /work dir (\S+)/.exec(out)?.[1];
  assert.ok(work, 'the demo named its work dir');
  const netns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
  const left = [...new Set(names)].filter((n) => netns.includes(n));
  if (fs.existsSync(work)) left.push(work);
  const probes = fs
    .readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(path.join('dist', 'src', 'demo', 'probe.js'));
      } catch {
        return false;
      }
    });
  return [...left, ...probes.map((p) => `probe process ${p}`)];
}

test('the demo passes: the plugin ran as a runtime runs it, a connection was redirected with SO_ORIGINAL_DST, DEL cleaned up', async () => {
  const r = await runDemo();
  assert.equal(r.code, 0, r.out);
  const lines = r.out.trimEnd().split('\n');
  assert.match(lines[lines.length - 1], /^PASS: \d+ checks/);
  assert.doesNotMatch(r.out, /FAILED/);
  assert.match(r.out, /answered by "Envoy outbound :15001" \(connection arrived at 127\.0\.0\.1:15001, SO_ORIGINAL_DST 10\.250\.0\.1:8080\)/);
  assert.match(r.out, /API stand-in saw: GET \/api\/v1\/namespaces\/demo\/pods\/productpage-v1 -> 200/);
  assert.match(r.out, /table inet istio-proxy-nat \{/, 'the ruleset is printed');
  assert.match(r.out, /counter packets [1-9]\d* bytes \d+ redirect to :15001/, 'the redirect rule counted the connection');
  assert.deepEqual(leftovers(r.out), []);
});

test('a failing plugin: FAIL, exit 1, everything removed', async () => {
  const r = await runDemo(['--plugin', '/bin/false']);
  assert.equal(r.code, 1, r.out);
  assert.match(r.out.trimEnd().split('\n').pop()!, /^FAIL/);
  assert.match(r.out, /FAILED {2}ADD succeeded/);
  assert.deepEqual(leftovers(r.out), []);
});

test('Ctrl-C in the middle: cleanup still runs, exit 130', async () => {
  const r = await runDemo([], /\[4\/8\]/);
  assert.equal(r.code, 130, r.out);
  assert.match(r.out, /interrupted \(SIGINT\): cleaning up/);
  assert.deepEqual(leftovers(r.out), []);
});
