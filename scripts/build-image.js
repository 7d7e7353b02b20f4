#!/usr/bin/env node
// `npm run image`: the DaemonSet image, built offline with tar, sha256 and JSON only (no registry
// image, no container builder), as an OCI image-layout archive that `ctr images import` and
// `podman load` read (docs/image.md). Needs `npm run build` done (dist/), the addon and shim built,
// and what `npm run package` needs.
//
//   node scripts/build-image.js [--out FILE] [--tag NAME]
//   node scripts/build-image.js --root DIR     only the image's root file system, into DIR
//                                              (install/Containerfile copies it onto scratch)
//
// The image is one layer on an empty root:
//   /usr/local/bin/node            the pinned official Node (install/node-dist.js), stripped
//   /usr/local/bin/istio-cni-ts, install-cni   entry points (node scripts)
//   /lib/x86_64-linux-gnu/, /lib64/ld-linux-x86-64.so.2   the payload's C library and loader,
//                                  hard links to the same files under /opt/cni/bin: stored once
//   /opt/istio-cni-ts/             package.json, bin/, dist/src/, production node_modules/, the addon
//   /opt/cni/bin/                  the host payload the installer copies (CNI_BIN_SOURCE_DIR)
// Deterministic where cheap: sorted entries, mtime 0, owner 0, gzip -n. The one file that differs
// between two builds is the plugin: V8's startup snapshot in it is not byte-reproducible.
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { ensureNodeBinary } = require('../install/node-dist');

const ROOT = path.join(__dirname, '..');
const PKG = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const APP = 'opt/istio-cni-ts';
const LIB = 'lib/x86_64-linux-gnu';

function fail(msg) {
  process.stderr.write(`build-image: ${msg}\n`);
  process.exit(1);
}

function run(cmd, args, opts = {}) {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20, ...opts });
  } catch (e) {
    fail(`${cmd} ${args.join(' ')} failed: ${String(e.stderr || e.message).slice(-3000)}`);
  }
}

function parseArgs(argv) {
  const o = { out: path.join(ROOT, 'build', 'image', `istio-cni-ts-${PKG.version}.oci.tar`), tag: `localhost/istio-cni-ts:${PKG.version}`, root: undefined };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out') o.out = path.resolve(argv[++i]);
    else if (argv[i] === '--tag') o.tag = argv[++i];
    else if (argv[i] === '--root') o.root = path.resolve(argv[++i]);
    else fail(`unknown argument ${argv[i]} (usage: build-image.js [--out FILE] [--tag NAME])`);
  }
  if (!/^[a-z0-9][a-z0-9._\-/:]*$/.test(o.tag) || !o.tag.includes(':')) fail(`--tag ${o.tag}: expected name:tag`);
  return o;
}

function copy(from, to, mode) {
  fs.mkdirSync(path.dirname(to), { recursive: true });
  fs.copyFileSync(from, to);
  fs.chmodSync(to, mode ?? (fs.statSync(from).mode & 0o111 ? 0o755 : 0o644));
}

function copyTree(from, to, skip = () => false) {
  for (const e of fs.readdirSync(from, { withFileTypes: true })) {
    const f = path.join(from, e.name);
    if (skip(f, e)) continue;
    if (e.isDirectory()) copyTree(f, path.join(to, e.name), skip);
    else if (e.isSymbolicLink()) {
      fs.mkdirSync(to, { recursive: true });
      fs.symlinkSync(fs.readlinkSync(f), path.join(to, e.name));
    } else if (e.isFile()) copy(f, path.join(to, e.name));
  }
}

/** The production dependencies' directories (npm's own view), relative to the package root. */
function productionModules() {
  const out = run('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: ROOT });
  return out.split('\n').filter((l) => l.startsWith(ROOT + path.sep)).map((l) => path.relative(ROOT, l)).filter((l) => l.startsWith('node_modules'));
}

/** A node script at /usr/local/bin/<name>: the kernel runs it with the image's node (no /usr/bin/env here). */
function entryPoint(stage, name, body) {
  const f = path.join(stage, 'usr/local/bin', name);
  fs.mkdirSync(path.dirname(f), { recursive: true });
  fs.writeFileSync(f, `#!/usr/local/bin/node\n'use strict';\n${body}\n`, { mode: 0o755 });
}

function sha256(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (process.arch !== 'x64') fail(`only x64 images are built here (this is ${process.arch})`);
  for (const f of ['dist/src/main.js', 'build/Release/nftables_napi.node']) {
    if (!fs.existsSync(path.join(ROOT, f))) fail(`${f} is missing: run \`npm run build\` (and \`npm ci\` for the addon) first`);
  }
  const started = Date.now();
  fs.mkdirSync(path.join(ROOT, 'build'), { recursive: true });
  const work = fs.mkdtempSync(path.join(ROOT, 'build', 'image-work-'));
  process.on('exit', () => fs.rmSync(work, { recursive: true, force: true }));
  const stage = path.join(work, 'root');
  fs.mkdirSync(stage, { recursive: true });

  // The host payload, as `npm run package` builds it.
  const payload = path.join(stage, 'opt/cni/bin');
  run(process.execPath, [path.join(ROOT, 'install', 'package.js'), '--out', payload], { stdio: ['ignore', 'pipe', 'inherit'] });

  // The C library and loader at the standard paths, as hard links to the payload's copies.
  const payloadLib = path.join(payload, 'istio-cni-ts', 'lib');
  fs.mkdirSync(path.join(stage, LIB), { recursive: true });
  for (const n of fs.readdirSync(payloadLib)) fs.linkSync(path.join(payloadLib, n), path.join(stage, LIB, n));
  fs.mkdirSync(path.join(stage, 'lib64'));
  // No RUNPATH anywhere and no ld.so.cache: these are the loader's default directories.
  fs.symlinkSync(`/${LIB}/ld-linux-x86-64.so.2`, path.join(stage, 'lib64', 'ld-linux-x86-64.so.2'));

  // Node itself.
  const node = ensureNodeBinary();
  copy(node.bin, path.join(stage, 'usr/local/bin/node'), 0o755);
  run('strip', ['--strip-all', path.join(stage, 'usr/local/bin/node')]);

  // The application: built JS, production modules, the addon.
  const app = path.join(stage, APP);
  copy(path.join(ROOT, 'package.json'), path.join(app, 'package.json'));
  copyTree(path.join(ROOT, 'bin'), path.join(app, 'bin'));
  copyTree(path.join(ROOT, 'dist', 'src'), path.join(app, 'dist', 'src'), (f) => f.endsWith('.map'));
  for (const m of productionModules()) {
    // Each package without its nested node_modules (those are listed on their own).
    copyTree(path.join(ROOT, m), path.join(app, m), (f, e) => e.isDirectory() && e.name === 'node_modules');
  }
  copy(path.join(ROOT, 'build/Release/nftables_napi.node'), path.join(app, 'build/Release/nftables_napi.node'), 0o644);
  run('strip', ['--strip-unneeded', path.join(app, 'build/Release/nftables_napi.node')]);

  // Entry points: the CLI, and install-cni as Istio's chart runs it (the package's own bin when
  // it has one, else the agent).
  entryPoint(stage, 'istio-cni-ts', `require('/${APP}/bin/istio-cni-ts.js');`);
  const installCni = PKG.bin && PKG.bin['install-cni'];
  entryPoint(stage, 'install-cni', installCni
    ? `require(${JSON.stringify(`/${APP}/${installCni.replace(/^\.\//, '')}`)});`
    : `require('/${APP}/dist/src/main.js').main(['agent', ...process.argv.slice(2)]).then((code) => { process.exitCode = code; });`);
  fs.mkdirSync(path.join(stage, 'tmp'), { mode: 0o1777 });
  fs.chmodSync(path.join(stage, 'tmp'), 0o1777);
  fs.mkdirSync(path.join(stage, 'etc'));
  fs.writeFileSync(path.join(stage, 'etc/passwd'), 'root:x:0:0:root:/:/usr/local/bin/istio-cni-ts\n', { mode: 0o644 });
  fs.writeFileSync(path.join(stage, 'etc/group'), 'root:x:0:\n', { mode: 0o644 });
  if (opts.root) {
    fs.rmSync(opts.root, { recursive: true, force: true });
    fs.renameSync(stage, opts.root);
    fs.rmSync(work, { recursive: true, force: true });
    process.stdout.write(`image root: ${opts.root}\n`);
    return;
  }

  // The layer (hard links kept: the libraries are stored once), the config, the manifest.
  const blobs = path.join(work, 'layout', 'blobs', 'sha256');
  fs.mkdirSync(blobs, { recursive: true });
  const layerTar = path.join(work, 'layer.tar');
  const top = fs.readdirSync(stage).sort();
  run('tar', ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '--format=posix', '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime',
    '-C', stage, '-cf', layerTar, ...top]);
  const diffId = sha256(layerTar);
  run('gzip', ['-n', '-6', layerTar]);
  const put = (file) => {
    const d = sha256(file);
    fs.renameSync(file, path.join(blobs, d));
    return { digest: `sha256:${d}`, size: fs.statSync(path.join(blobs, d)).size };
  };
  const putJson = (name, obj) => {
    const f = path.join(work, name);
    fs.writeFileSync(f, JSON.stringify(obj));
    return put(f);
  };
  const layer = put(`${layerTar}.gz`);
  const created = '1970-01-01T00:00:00Z';
  const config = putJson('config.json', {
    architecture: 'amd64',
    os: 'linux',
    created,
    config: {
      User: '0',
      Env: ['PATH=/usr/local/bin:/usr/bin:/bin'],
      Entrypoint: ['/usr/local/bin/istio-cni-ts'],
      Cmd: ['agent'],
      WorkingDir: '/',
      Labels: { 'org.opencontainers.image.title': 'istio-cni-ts', 'org.opencontainers.image.version': PKG.version, 'org.opencontainers.image.licenses': PKG.license },
    },
    rootfs: { type: 'layers', diff_ids: [`sha256:${diffId}`] },
    history: [{ created, created_by: 'scripts/build-image.js' }],
  });
  const manifest = putJson('manifest.json', {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layer }],
  });
  const layout = path.join(work, 'layout');
  fs.writeFileSync(path.join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  fs.writeFileSync(path.join(layout, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      ...manifest,
      platform: { architecture: 'amd64', os: 'linux' },
      annotations: { 'io.containerd.image.name': opts.tag, 'org.opencontainers.image.ref.name': opts.tag.slice(opts.tag.lastIndexOf(':') + 1) },
    }],
  }));
  fs.mkdirSync(path.dirname(opts.out), { recursive: true });
  run('tar', ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-C', layout, '-cf', `${opts.out}.tmp`, 'oci-layout', 'index.json', 'blobs']);
  fs.renameSync(`${opts.out}.tmp`, opts.out);
  const unpacked = Number(run('du', ['-sb', '--', stage]).split('\t')[0]);
  fs.rmSync(work, { recursive: true, force: true });
  const mb = (n) => `${(n / 1048576).toFixed(1)} MB`;
  process.stdout.write(`image: ${opts.out}\n  ${opts.tag}, manifest ${manifest.digest}\n  layer ${mb(layer.size)} compressed, ${mb(unpacked)} unpacked; Node ${node.version}; built in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
}

main();
