#!/usr/bin/env node
// `npm run package`: the self-contained CNI payload the node agent copies to the host
// (docs/payload.md). Needs the addon and the shim built (`npm ci` / `npx node-gyp rebuild`),
// esbuild and postject (devDependencies) and patchelf (Debian; scripts/install-system-deps.sh).
//
//   node install/package.js [--out DIR] [--no-snapshot]
//   node install/package.js --bundle-only FILE   (just the esbuild bundle, e.g. to profile it with
//                                               node --snapshot-blob / --build-snapshot / --cpu-prof)
//
// Layout of DIR (default dist/payload):
//   istio-cni                      the CNI shim (native/cni-shim.c): forwards to the agent, else
//                                  runs the standalone plugin below
//   istio-cni-ts/istio-cni-plugin  the standalone plugin: a Node single executable application
//                                  whose startup snapshot holds the bundled plugin code
//   istio-cni-ts/nftables_napi.node, netlink.node   native code, loaded at run time
//   istio-cni-ts/lib*.so.*         the shared libraries those (and the executable) need, found
//                                  through RUNPATH $ORIGIN; only glibc itself comes from the host
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const ROOT = path.join(__dirname, '..');
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
/** The glibc family: part of every host, tied to its kernel interface; never shipped. */
const HOST_LIBS = /^(linux-vdso|linux-gate|ld-linux[^ ]*|libc|libm|libdl|libpthread|librt|libresolv|libutil)\.so/;
const PLUGIN_DIR = 'istio-cni-ts';
const PLUGIN_EXE = 'istio-cni-plugin';
const SHIM = 'istio-cni';

function fail(msg) {
  process.stderr.write(`package: ${msg}\n`);
  process.exit(1);
}

function run(cmd, args, opts = {}) {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  } catch (e) {
    const why = String(e.stderr || e.message);
    fail(`${cmd} ${args.join(' ')} failed: ${why.length > 4000 ? `${why.slice(0, 1000)} [...] ${why.slice(-2500)}` : why}`);
  }
}

function need(file, how) {
  if (!fs.existsSync(file)) fail(`${path.relative(ROOT, file) || file} is missing: ${how}`);
}

function parseArgs(argv) {
  const o = { out: path.join(ROOT, 'dist', 'payload'), snapshot: true, bundleOnly: undefined };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out') o.out = path.resolve(argv[++i]);
    else if (argv[i] === '--bundle-only') o.bundleOnly = path.resolve(argv[++i]);
    else if (argv[i] === '--no-snapshot') o.snapshot = false;
    else fail(`unknown argument ${argv[i]}`);
  }
  return o;
}

/** The shared libraries `file` loads (ldd), less the host's glibc: [{ name, path }]. */
function sharedLibs(file) {
  const out = run('ldd', [file]);
  const libs = [];
  for (const line of out.split('\n')) {
    const m = /^\s*(\S+)\s+=>\s+(\/\S+)/.exec(line);
    if (m && !HOST_LIBS.test(m[1])) libs.push({ name: m[1], path: m[2] });
    if (/not found/.test(line)) fail(`${file}: ${line.trim()}`);
  }
  return libs;
}

/** esbuild plugins: http/https behind a lazy proxy (not snapshot-able), netlink's binding from the payload. */
const plugins = [
  {
    name: 'lazy-http',
    setup(b) {
      b.onResolve({ filter: /^(node:)?https?$/ }, (a) =>
        a.namespace === 'lazy-builtin' ? { path: a.path, external: true } : { path: a.path.replace(/^node:/, ''), namespace: 'lazy-builtin' });
      b.onLoad({ filter: /.*/, namespace: 'lazy-builtin' }, (a) => ({
        // The module is required on first property access, i.e. at run time, never while the
        // snapshot is built (node 20 cannot serialise the HTTP parser's handles).
        // The proxy is the exports' prototype: esbuild's import-star helper copies own properties
        // (none) and keeps the prototype, so property reads still reach the proxy.
        contents: `let m; const get = () => (m ??= require(${JSON.stringify(a.path)}));
module.exports = Object.create(new Proxy({}, { get: (_, k) => (k === '__esModule' ? undefined : get()[k]), has: (_, k) => k in get() }));`,
        loader: 'js',
      }));
    },
  },
  {
    name: 'netlink-binding',
    setup(b) {
      b.onResolve({ filter: /^node-gyp-build$/ }, () => ({ path: 'node-gyp-build', namespace: 'netlink-binding' }));
      b.onLoad({ filter: /.*/, namespace: 'netlink-binding' }, () => ({
        // netlink.node beside the executable (src/plugin/standalone.ts sets the path), opened on
        // first use: netlink's JS is evaluated into the snapshot, its binding cannot be.
        contents: `let b; const get = () => { if (!b) { const m = { exports: {} }; process.dlopen(m, globalThis.__ictsNetlinkBinding); b = m.exports; } return b; };
module.exports = () => new Proxy({}, { get: (_, k) => get()[k] });`,
        loader: 'js',
      }));
    },
  },
];

async function bundle(work) {
  const esbuild = require('esbuild');
  const outfile = path.join(work, 'plugin.js');
  const r = await esbuild.build({
    stdin: { contents: "require('./src/plugin/standalone').main();", resolveDir: ROOT, sourcefile: 'payload-entry.js', loader: 'js' },
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    outfile,
    minify: true,
    keepNames: true,
    legalComments: 'none',
    metafile: true,
    logLevel: 'warning',
    plugins,
  });
  const inputs = Object.keys(r.metafile.inputs);
  const unwanted = inputs.filter((i) => /node_modules\/(yargs|prom-client|winston|@kubernetes)\//.test(i) || /src\/cli\//.test(i));
  if (unwanted.length) fail(`the CNI bundle must not contain the CLI or agent libraries: ${unwanted.join(', ')}`);
  fs.writeFileSync(path.join(work, 'meta.json'), JSON.stringify(r.metafile));
  return { file: outfile, inputs };
}

function buildSea(work, bundleFile, exe, snapshot) {
  const cfg = path.join(work, 'sea-config.json');
  const blob = path.join(work, 'sea.blob');
  fs.writeFileSync(cfg, JSON.stringify({ main: bundleFile, output: blob, disableExperimentalSEAWarning: true, useSnapshot: snapshot }));
  run(process.execPath, ['--experimental-sea-config', cfg], { cwd: work });
  fs.copyFileSync(process.execPath, exe);
  fs.chmodSync(exe, 0o755);
  const postject = path.join(ROOT, 'node_modules', 'postject', 'dist', 'cli.js');
  need(postject, 'run `npm install` (postject is a devDependency)');
  run(process.execPath, [postject, exe, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE]);
  // Its own libstdc++/libgcc_s from beside it (copied below). After the injection: postject
  // rewrites the ELF file and breaks the dynamic section patchelf has moved; the other way round
  // both survive.
  run('patchelf', ['--set-rpath', '$ORIGIN', exe]);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.bundleOnly) {
    const work = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'icts-bundle-'));
    const b = await bundle(work);
    fs.copyFileSync(b.file, opts.bundleOnly);
    fs.rmSync(work, { recursive: true, force: true });
    process.stdout.write(`bundle: ${opts.bundleOnly} (${b.inputs.length} inputs)\n`);
    return;
  }
  const addon = path.join(ROOT, 'build', 'Release', 'nftables_napi.node');
  const shim = path.join(ROOT, 'build', 'Release', 'istio-cni-shim');
  need(addon, 'build the addon first (`npm ci` or `npx node-gyp rebuild`)');
  need(shim, 'build the shim first (`npm ci` or `npx node-gyp rebuild`)');
  const arch = { x64: 'linux-x64', arm64: 'linux-arm64', arm: 'linux-arm', ia32: 'linux-ia32' }[process.arch];
  const netlink = path.join(ROOT, 'node_modules', 'netlink', 'prebuilds', arch ?? '?', 'node.napi.node');
  need(netlink, `netlink has no prebuilt binding for ${process.arch}`);
  run('sh', ['-c', 'command -v patchelf'], {});

  const started = Date.now();
  const work = fs.mkdtempSync(path.join(ROOT, 'build', 'payload-work-'));
  const tmpOut = `${opts.out}.tmp-${process.pid}`;
  fs.rmSync(tmpOut, { recursive: true, force: true });
  const dir = path.join(tmpOut, PLUGIN_DIR);
  fs.mkdirSync(dir, { recursive: true });
  try {
    const b = await bundle(work);
    const exe = path.join(dir, PLUGIN_EXE);
    buildSea(work, b.file, exe, opts.snapshot);
    for (const [from, name] of [[addon, 'nftables_napi.node'], [netlink, 'netlink.node']]) {
      const to = path.join(dir, name);
      fs.copyFileSync(from, to);
      fs.chmodSync(to, 0o644);
      run('patchelf', ['--set-rpath', '$ORIGIN', to]);
    }
    // Every library the executable and the native files load, and theirs, beside them.
    const seen = new Map();
    const queue = [exe, path.join(dir, 'nftables_napi.node'), path.join(dir, 'netlink.node')];
    while (queue.length) {
      for (const lib of sharedLibs(queue.shift())) {
        if (seen.has(lib.name)) continue;
        seen.set(lib.name, lib.path);
        const to = path.join(dir, lib.name);
        fs.copyFileSync(fs.realpathSync(lib.path), to);
        fs.chmodSync(to, 0o644);
        run('patchelf', ['--set-rpath', '$ORIGIN', to]);
        queue.push(to);
      }
    }
    fs.copyFileSync(shim, path.join(tmpOut, SHIM));
    fs.chmodSync(path.join(tmpOut, SHIM), 0o755);
    // Nothing of the build machine may be needed: every dependency resolves inside the payload.
    for (const f of [exe, ...fs.readdirSync(dir).filter((n) => n.endsWith('.node') || n.includes('.so')).map((n) => path.join(dir, n))]) {
      for (const lib of sharedLibs(f)) {
        if (path.dirname(lib.path) !== dir) fail(`${f} would load ${lib.path} from outside the payload`);
      }
    }
    fs.writeFileSync(path.join(dir, 'PAYLOAD'), `${JSON.stringify({
      node: process.version,
      arch: process.arch,
      snapshot: opts.snapshot,
      libraries: [...seen.keys()].sort(),
      bundleInputs: b.inputs.length,
    }, null, 2)}\n`);
    fs.rmSync(opts.out, { recursive: true, force: true });
    fs.renameSync(tmpOut, opts.out);
  } finally {
    fs.rmSync(tmpOut, { recursive: true, force: true });
    fs.rmSync(work, { recursive: true, force: true });
  }
  const size = (p) => fs.statSync(p).size;
  const mb = (n) => `${(n / 1048576).toFixed(1)} MB`;
  const files = fs.readdirSync(path.join(opts.out, PLUGIN_DIR));
  const total = files.reduce((s, f) => s + size(path.join(opts.out, PLUGIN_DIR, f)), size(path.join(opts.out, SHIM)));
  process.stdout.write(`payload: ${opts.out} (${files.length + 1} files, ${mb(total)}, snapshot ${opts.snapshot ? 'on' : 'off'}) in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
}

main().catch((e) => fail(e.stack || String(e)));
