#!/usr/bin/env node
// `npm run package`: the self-contained CNI payload the node agent copies to the host
// (docs/payload.md). Needs the addon and the shim built (`npm ci` / `npx node-gyp rebuild`),
// esbuild and postject (devDependencies), patchelf and binutils (Debian;
// scripts/install-system-deps.sh), and the npm registry once (the pinned official Node build,
// install/node-dist.js, cached under build/node-dist/).
//
//   node install/package.js [--out DIR] [--no-snapshot] [--node VERSION]
//   node install/package.js --bundle-only FILE   (just the esbuild bundle, e.g. to profile it with
//                                               node --snapshot-blob / --build-snapshot / --cpu-prof)
//
// Layout of DIR (default dist/payload):
//   istio-cni                      the CNI shim (native/cni-shim.c): forwards to the agent, else
//                                  starts the standalone plugin below through the bundled loader
//   istio-cni-ts/istio-cni-plugin  the standalone plugin: a Node single executable application
//                                  whose startup snapshot holds the bundled plugin code
//   istio-cni-ts/nftables_napi.node, netlink.node   native code, loaded at run time
//   istio-cni-ts/lib/              the dynamic loader and every shared library the above need,
//                                  glibc included: nothing comes from the host's /lib
//   istio-cni-ts/MANIFEST          kind, size and path of every file the shim hands the loader
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const ROOT = path.join(__dirname, '..');
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
const { ensureNodeBinary, NODE_DIST } = require('./node-dist');

/** Provided by the kernel, not a file. */
const KERNEL_LIBS = /^(linux-vdso|linux-gate)\.so/;
const PLUGIN_DIR = 'istio-cni-ts';
const PLUGIN_EXE = 'istio-cni-plugin';
const SHIM = 'istio-cni';
const LIB_DIR = 'lib';
const MANIFEST = 'MANIFEST';

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
  const o = { out: path.join(ROOT, 'dist', 'payload'), snapshot: true, bundleOnly: undefined, node: NODE_DIST.version };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out') o.out = path.resolve(argv[++i]);
    else if (argv[i] === '--bundle-only') o.bundleOnly = path.resolve(argv[++i]);
    else if (argv[i] === '--no-snapshot') o.snapshot = false;
    else if (argv[i] === '--node') o.node = argv[++i];
    else fail(`unknown argument ${argv[i]}`);
  }
  return o;
}

/**
 * The shared libraries `file` loads (ldd), the dynamic loader included: [{ name, path }]. With
 * `libDir`, resolved as the bundled loader resolves them (`--library-path libDir`).
 */
function sharedLibs(file, libDir) {
  const out = libDir
    ? run(path.join(libDir, loaderName()), ['--list', '--library-path', libDir, file])
    : run('ldd', [file]);
  const libs = [];
  for (const line of out.split('\n')) {
    if (/not found/.test(line)) fail(`${file}: ${line.trim()}`);
    const m = /^\s*(\S+)\s+=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S*\/(ld-linux[^/\s]*))\s/.exec(line);
    if (!m) continue;
    const [name, where] = m[2]?.startsWith('/') ? [m[1], m[2]] : [m[2], m[1]];
    if (!KERNEL_LIBS.test(name)) libs.push({ name: path.basename(name), path: where });
  }
  return libs;
}

/** The dynamic loader's file name (glibc's, per architecture). */
function loaderName() {
  const n = { x64: 'ld-linux-x86-64.so.2', arm64: 'ld-linux-aarch64.so.1' }[process.arch];
  if (!n) fail(`no bundled loader known for ${process.arch}`);
  return n;
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
        // netlink.node beside the executable (src/plugin/standalone.ts sets the path in
        // src/netns/netlink-binding.ts), opened on first use: netlink's JS is evaluated into the
        // snapshot, its binding cannot be.
        contents: `const { netlinkBindingPath } = require(${JSON.stringify(path.join(ROOT, 'src', 'netns', 'netlink-binding.ts'))});
let b; const get = () => { if (!b) { const m = { exports: {} }; process.dlopen(m, netlinkBindingPath()); b = m.exports; } return b; };
module.exports = () => new Proxy({}, { get: (_, k) => get()[k] });`,
        loader: 'js',
        resolveDir: ROOT,
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
    target: 'node20', // the lowest Node that runs the unbundled CLI too (package.json engines)
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

/**
 * The SEA: the blob (and its snapshot) made by `node` itself (the pinned official build: a blob
 * is only valid for the Node version that wrote it), injected into a stripped copy of it.
 */
function buildSea(work, bundleFile, exe, snapshot, node) {
  const cfg = path.join(work, 'sea-config.json');
  const blob = path.join(work, 'sea.blob');
  fs.writeFileSync(cfg, JSON.stringify({ main: bundleFile, output: blob, disableExperimentalSEAWarning: true, useSnapshot: snapshot }));
  run(node, ['--experimental-sea-config', cfg], { cwd: work, env: { PATH: process.env.PATH } });
  fs.copyFileSync(node, exe);
  fs.chmodSync(exe, 0o755);
  // The official build keeps its symbol table (~18 MB); the dynamic symbols addons bind to stay.
  run('strip', ['--strip-all', exe]);
  const postject = path.join(ROOT, 'node_modules', 'postject', 'dist', 'cli.js');
  need(postject, 'run `npm install` (postject is a devDependency)');
  run(process.execPath, [postject, exe, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE]);
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

  run('sh', ['-c', 'command -v strip && command -v objcopy'], {});
  const node = ensureNodeBinary(opts.node, (m) => process.stderr.write(`package: ${m}\n`));

  const started = Date.now();
  const work = fs.mkdtempSync(path.join(ROOT, 'build', 'payload-work-'));
  const tmpOut = `${opts.out}.tmp-${process.pid}`;
  fs.rmSync(tmpOut, { recursive: true, force: true });
  const dir = path.join(tmpOut, PLUGIN_DIR);
  const libDir = path.join(dir, LIB_DIR);
  fs.mkdirSync(libDir, { recursive: true });
  try {
    const b = await bundle(work);
    const exe = path.join(dir, PLUGIN_EXE);
    buildSea(work, b.file, exe, opts.snapshot, node.bin);
    const natives = [[addon, 'nftables_napi.node'], [netlink, 'netlink.node']].map(([from, name]) => {
      const to = path.join(dir, name);
      fs.copyFileSync(from, to);
      fs.chmodSync(to, 0o644);
      // Found through the loader's --library-path only: a RUNPATH could pull the bundled libc
      // under a host's loader.
      run('patchelf', ['--remove-rpath', to]);
      run('strip', ['--strip-unneeded', to]);
      return to;
    });
    // Every library the executable and the native files load, and theirs, glibc and its loader
    // included, from the build machine (Debian 12's glibc 2.36 and libnftables).
    const seen = new Map();
    const queue = [exe, ...natives];
    while (queue.length) {
      for (const lib of sharedLibs(queue.shift())) {
        if (seen.has(lib.name)) continue;
        seen.set(lib.name, lib.path);
        const to = path.join(libDir, lib.name);
        fs.copyFileSync(fs.realpathSync(lib.path), to);
        fs.chmodSync(to, lib.name === loaderName() ? 0o755 : 0o644);
        if (lib.name !== loaderName()) run('patchelf', ['--remove-rpath', to]);
        run('strip', ['--strip-debug', to]);
        queue.push(to);
      }
    }
    need(path.join(libDir, loaderName()), `ldd named no ${loaderName()}`);
    fs.copyFileSync(shim, path.join(tmpOut, SHIM));
    fs.chmodSync(path.join(tmpOut, SHIM), 0o755);
    // Nothing of the build machine may be needed: resolved the way the shim starts the plugin,
    // every dependency is inside the payload.
    const libs = fs.readdirSync(libDir).map((n) => path.join(libDir, n));
    for (const f of [exe, ...natives, ...libs.filter((l) => path.basename(l) !== loaderName())]) {
      for (const lib of sharedLibs(f, libDir)) {
        if (path.dirname(lib.path) !== libDir) fail(`${f} would load ${lib.path} from outside the payload`);
      }
    }
    // What the shim checks before it hands these files to the loader (docs/payload.md).
    const entry = (kind, f) => `${kind} ${fs.statSync(f).size} ${path.relative(dir, f)}`;
    fs.writeFileSync(path.join(dir, MANIFEST), `${[
      entry('loader', path.join(libDir, loaderName())),
      entry('plugin', exe),
      ...natives.map((f) => entry('native', f)),
      ...libs.filter((l) => path.basename(l) !== loaderName()).sort().map((f) => entry('lib', f)),
    ].join('\n')}\n`);
    fs.writeFileSync(path.join(dir, 'PAYLOAD'), `${JSON.stringify({
      node: `v${node.version}`,
      nodePackage: `${node.pkg}@${node.version}`,
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
  const mb = (n) => `${(n / 1048576).toFixed(1)} MB`;
  const files = [];
  const walk = (d) => fs.readdirSync(d, { withFileTypes: true }).forEach((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : files.push(path.join(d, e.name))));
  walk(opts.out);
  const total = files.reduce((s, f) => s + fs.statSync(f).size, 0);
  process.stdout.write(`payload: ${opts.out} (${files.length} files, ${mb(total)}, Node ${node.version}, snapshot ${opts.snapshot ? 'on' : 'off'}) in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
}

main().catch((e) => fail(e.stack || String(e)));
