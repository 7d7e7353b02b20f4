// Every ELF file in the payload finds every symbol version it needs inside the payload: for each
// "required from LIB: VERSION" that `objdump -p` lists, the payload ships LIB and LIB defines
// VERSION. So no host library, whatever its age, is ever needed (docs/payload.md). The shim is
// static: no loader, no library. The same check fails against Debian 11's libc (glibc 2.31).
// Needs objdump (binutils) and debootstrap (the Debian 11 root, shared with chroot.test.ts).
import { before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SHIM_NAME, ensureDebianRoot, ensurePayload } from '../../support/payload';
import { requireRootAndTools } from '../../support/root';

let payload: string;
before(() => {
  requireRootAndTools('objdump', 'flock', 'debootstrap');
  payload = ensurePayload();
});

function objdump(file: string): string {
  const r = spawnSync('objdump', ['-p', file], { encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, `objdump -p ${file}: ${r.stderr}`);
  return r.stdout;
}

/** The ELF files under `dir` (by their magic), as paths. */
function elfFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const f = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...elfFiles(f));
    else if (
      e.isFile() &&
      fs
        .readFileSync(f)
        .subarray(0, 4)
        .equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))
    )
      out.push(f);
  }
  return out.sort();
}

/** Version definitions (of a library: its soname's versions) and references ("lib VERSION"). */
function versions(text: string): { defs: string[]; refs: { lib: string; version: string }[] } {
  const defs: string[] = [];
  const refs: { lib: string; version: string }[] = [];
  let section = '';
  let from = '';
  for (const line of text.split('\n')) {
    if (/^Version definitions:/.test(line)) section = 'def';
    else if (/^Version References:/.test(line)) section = 'ref';
    else if (/^[A-Za-z]/.test(line)) section = '';
    else if (section === 'def') {
      const m = /^\d+\s+0x[0-9a-f]+\s+0x[0-9a-f]+\s+(\S+)/.exec(line);
      if (m) defs.push(m[1]);
    } else if (section === 'ref') {
      const lib = /^\s+required from (\S+):/.exec(line);
      const v = /^\s+0x[0-9a-f]+\s+0x[0-9a-f]+\s+\d+\s+(\S+)/.exec(line);
      if (lib) from = lib[1];
      else if (v) refs.push({ lib: from, version: v[1] });
    }
  }
  return { defs, refs };
}

type Versions = ReturnType<typeof versions>;

/** Each version reference of `files` that the library of that name in `byName` does not define. */
function unmet(files: string[], byName: Map<string, Versions>): { missing: string[]; checked: number } {
  let checked = 0;
  const missing: string[] = [];
  for (const f of files) {
    for (const r of byName.get(path.basename(f))!.refs) {
      checked++;
      const lib = byName.get(r.lib);
      if (!lib) missing.push(`${path.relative(payload, f)} needs ${r.lib} (${r.version}), which the payload does not ship`);
      else if (!lib.defs.includes(r.version))
        missing.push(`${path.relative(payload, f)} needs ${r.version} from ${r.lib}, which defines only up to ${lib.defs.at(-1)}`);
    }
  }
  return { missing, checked };
}

test('every symbol version an ELF file of the payload needs is defined by a library the payload ships', () => {
  const files = elfFiles(path.join(payload, 'istio-cni-ts'));
  const byName = new Map(files.map((f) => [path.basename(f), versions(objdump(f))]));
  for (const lib of ['ld-linux-x86-64.so.2', 'libc.so.6', 'libstdc++.so.6', 'libnftables.so.1', 'nftables_napi.node', 'istio-cni-plugin']) {
    assert.ok(byName.has(lib), `${lib} is in the payload`);
  }
  const { missing, checked } = unmet(files, byName);
  assert.deepEqual(missing, []);
  assert.ok(checked > 100, `only ${checked} version references found: is objdump's output parsed?`);
  // The executable's own needs include glibc versions newer than Node's minimum (2.28) only if
  // the payload's libc defines them: the check above. Its NEEDED libraries are all shipped too.
  for (const f of files) {
    for (const m of objdump(f).matchAll(/^\s+NEEDED\s+(\S+)/gm)) assert.ok(byName.has(m[1]), `${path.relative(payload, f)} needs ${m[1]}, not shipped`);
  }
});

test("the same check against Debian 11's C library finds what it lacks (the addon needs GLIBC_2.34)", () => {
  // Not vacuous: with bullseye's libc.so.6 (glibc 2.31) in place of the payload's, it fails.
  const files = elfFiles(path.join(payload, 'istio-cni-ts'));
  const byName = new Map(files.map((f) => [path.basename(f), versions(objdump(f))]));
  byName.set('libc.so.6', versions(objdump(path.join(ensureDebianRoot('bullseye'), 'lib/x86_64-linux-gnu/libc.so.6'))));
  assert.ok(byName.get('libc.so.6')!.defs.includes('GLIBC_2.30') && !byName.get('libc.so.6')!.defs.includes('GLIBC_2.32'), 'glibc 2.31');
  const { missing } = unmet(files, byName);
  assert.ok(
    missing.some((m) => /nftables_napi\.node needs GLIBC_2\.34 from libc\.so\.6/.test(m)),
    missing.join('\n'),
  );
});

test('the shim is static: no loader, no library, no versioned symbol', () => {
  const text = objdump(path.join(payload, SHIM_NAME));
  assert.doesNotMatch(text, /^\s+INTERP\s/m);
  assert.doesNotMatch(text, /NEEDED/);
  assert.deepEqual(versions(text).refs, []);
});
