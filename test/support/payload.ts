// The self-contained payload (install/package.js) for tests and benchmarks, built once and
// reused while nothing it is made of changed, and a minimal Debian root (debootstrap minbase: no
// Node.js, no nftables) cached outside the repository, to run the payload with nothing from the
// build machine. Both fail loudly when they cannot be made.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PACKAGE_ROOT } from './conformance';
import { pluginConf } from './cni-fakes';
import { tempDir } from './tmp';

export const TEST_PAYLOAD = path.join(PACKAGE_ROOT, 'build', 'test-payload');
export const SHIM_NAME = 'istio-cni';
export const PLUGIN_REL = path.join('istio-cni-ts', 'istio-cni-plugin');
const LOADER_REL = path.join('istio-cni-ts', 'lib', 'ld-linux-x86-64.so.2');

/**
 * The standalone plugin's command line, as the shim starts it: through the payload's own loader
 * and libraries (docs/payload.md). `base` is where the payload is seen (a root's /opt/cni/bin).
 */
export function standaloneArgv(base: string): string[] {
  const plugin = path.join(base, PLUGIN_REL);
  return [path.join(base, LOADER_REL), '--library-path', path.join(base, 'istio-cni-ts', 'lib'), '--argv0', plugin, plugin];
}

/** Newest mtime of the files under `p` (files only; node_modules skipped). */
function newest(p: string): number {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    return 0;
  }
  if (!st.isDirectory()) return st.mtimeMs;
  let m = 0;
  for (const e of fs.readdirSync(p)) if (e !== 'node_modules') m = Math.max(m, newest(path.join(p, e)));
  return m;
}

function inputsMtime(): number {
  return Math.max(
    ...['src', 'install/package.js', 'install/node-dist.js', 'build/Release/nftables_napi.node', 'build/Release/istio-cni-shim', 'package-lock.json'].map((p) =>
      newest(path.join(PACKAGE_ROOT, p)),
    ),
  );
}

/**
 * build/test-payload, rebuilt by install/package.js when any input is newer than it. Several
 * test files may ask at once: the build runs under flock.
 */
export function ensurePayload(): string {
  const marker = path.join(TEST_PAYLOAD, 'istio-cni-ts', 'PAYLOAD');
  if (fs.existsSync(marker) && fs.statSync(marker).mtimeMs >= inputsMtime()) return TEST_PAYLOAD;
  for (const f of ['build/Release/nftables_napi.node', 'build/Release/istio-cni-shim']) {
    if (!fs.existsSync(path.join(PACKAGE_ROOT, f))) {
      throw new Error(`${f} is not built: run \`npm ci\` (or \`npm run install\`): node-gyp builds the addon and the CNI shim`);
    }
  }
  const lock = path.join(PACKAGE_ROOT, 'build', '.test-payload.lock');
  const script =
    `test -f '${marker}' && test "$(stat -c %Y '${marker}')" -ge ${Math.floor(inputsMtime() / 1000) + 1} || ` +
    `'${process.execPath}' '${path.join(PACKAGE_ROOT, 'install', 'package.js')}' --out '${TEST_PAYLOAD}'`;
  const r = spawnSync('flock', [lock, 'sh', '-c', script], { encoding: 'utf8', timeout: 10 * 60_000 });
  if (r.status !== 0) {
    throw new Error(`building the payload (install/package.js) failed: ${r.error?.message ?? ''}${r.stderr}${r.stdout}`);
  }
  if (!fs.existsSync(marker)) throw new Error(`install/package.js did not produce ${marker}`);
  return TEST_PAYLOAD;
}

// ---------------------------------------------------------------------------------------------
// A minimal Debian root.

export const ROOTFS_CACHE = process.env.ICTS_ROOTFS_CACHE ?? '/var/tmp/icts-rootfs';
const MIRROR = process.env.ICTS_DEBIAN_MIRROR ?? 'http://deb.debian.org/debian';
const ROOTFS_OK = '.icts-rootfs-ok';

/**
 * A Debian root made by `debootstrap --variant=minbase`, cached under ROOTFS_CACHE (it takes a
 * minute or two the first time). Created in a temporary folder and renamed into place when
 * complete, under flock, so a test never sees half a root.
 */
export function ensureDebianRoot(suite = 'bookworm'): string {
  const root = path.join(ROOTFS_CACHE, `${suite}-minbase`);
  if (fs.existsSync(path.join(root, ROOTFS_OK))) return root;
  if (spawnSync('sh', ['-c', 'command -v debootstrap'], { encoding: 'utf8' }).status !== 0) {
    throw new Error('this test needs debootstrap to build its minimal Debian root (apt-get install debootstrap; scripts/install-system-deps.sh)');
  }
  fs.mkdirSync(ROOTFS_CACHE, { recursive: true, mode: 0o755 });
  const tmp = `${root}.partial`;
  const script = [
    'set -e',
    `test -f '${root}/${ROOTFS_OK}' && exit 0`,
    `rm -rf '${tmp}' '${root}'`,
    `debootstrap --variant=minbase ${suite} '${tmp}' '${MIRROR}' >'${ROOTFS_CACHE}/debootstrap-${suite}.log' 2>&1 || { tail -n 30 '${ROOTFS_CACHE}/debootstrap-${suite}.log' >&2; exit 1; }`,
    `date -u +%FT%TZ > '${tmp}/${ROOTFS_OK}'`,
    `mv '${tmp}' '${root}'`,
  ].join('\n');
  const r = spawnSync('flock', [path.join(ROOTFS_CACHE, `.lock-${suite}`), 'sh', '-c', script], { encoding: 'utf8', timeout: 15 * 60_000 });
  if (r.status !== 0 || !fs.existsSync(path.join(root, ROOTFS_OK))) {
    throw new Error(`cannot create the minimal Debian root ${root} with debootstrap from ${MIRROR}: ${r.error?.message ?? ''}${r.stderr}`);
  }
  return root;
}

export interface RootRun {
  stdout: string;
  stderr: string;
  code: number | null;
}

/**
 * Runs `cmd` (a path inside the root) chrooted into `root`, in a private mount namespace that
 * mounts /proc and binds: the payload at /opt/cni/bin, `runDir` at /run/istio-cni, and each
 * netns file at the same path inside. Nothing is mounted in the caller's namespace, and nothing
 * stays mounted when the command ends.
 */
export function runInRoot(
  root: string,
  opts: { payload: string; runDir: string; netns: string[]; cmd: string | string[]; env: Record<string, string>; stdin: string; timeoutMs?: number },
): Promise<RootRun> {
  for (const d of ['opt/cni/bin', 'run/istio-cni', 'run/netns', 'proc', 'dev']) fs.mkdirSync(path.join(root, d), { recursive: true });
  // An empty root gets /dev/null bound in (a Debian root has its own).
  const devNull = !fs.existsSync(path.join(root, 'dev/null'));
  if (devNull) fs.writeFileSync(path.join(root, 'dev/null'), '');
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const lines = [
    'set -e',
    `mount -t proc proc ${q(path.join(root, 'proc'))}`,
    `mount --bind ${q(opts.payload)} ${q(path.join(root, 'opt/cni/bin'))}`,
    `mount --bind ${q(opts.runDir)} ${q(path.join(root, 'run/istio-cni'))}`,
    ...(devNull ? [`mount --bind /dev/null ${q(path.join(root, 'dev/null'))}`] : []),
    ...opts.netns.flatMap((ns) => [`touch ${q(path.join(root, ns))}`, `mount --bind ${q(ns)} ${q(path.join(root, ns))}`]),
    `exec chroot ${q(root)} ${(Array.isArray(opts.cmd) ? opts.cmd : [opts.cmd]).map(q).join(' ')}`,
  ];
  return runAsync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', lines.join('\n')], {
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...opts.env },
    stdin: opts.stdin,
    timeoutMs: opts.timeoutMs ?? 60_000,
  });
}

/**
 * Runs a command without blocking the event loop (the API stand-in answers from this process),
 * killed after `timeoutMs`.
 */
export function runAsync(cmd: string, args: string[], opts: { env: Record<string, string>; stdin: string; timeoutMs?: number }): Promise<RootRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ').slice(0, 200)} did not end within ${opts.timeoutMs} ms; stderr: ${stderr}`));
    }, opts.timeoutMs ?? 60_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, code });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.stdin);
  });
}

// ---------------------------------------------------------------------------------------------
// A local API stand-in for the plugin's single pod GET (HTTPS, generated CA, bearer token), and a
// run dir with the kubeconfig install-cni writes.

export interface PodApi {
  readonly runDir: string;
  readonly token: string;
  readonly requests: string[];
  pods: Map<string, object>;
  close(): Promise<void>;
}

export async function startPodApi(token = 'sa-token-payload-3e9d1f'): Promise<PodApi> {
  // Loaded here so that modules that only build payloads do not pull in TLS.
  /* eslint-disable @typescript-eslint/no-require-imports */
  const https = require('node:https') as typeof import('node:https');
  const os = require('node:os') as typeof import('node:os');
  const { istioKubeconfig, makePki } = require('./tls') as typeof import('./tls');
  /* eslint-enable @typescript-eslint/no-require-imports */
  const pki = makePki();
  const pods = new Map<string, object>();
  const requests: string[] = [];
  const server = https.createServer({ cert: pki.cert, key: pki.key, keepAliveTimeout: 60_000 }, (req, res) => {
    requests.push(`${req.method} ${req.url}`);
    const m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/?]+)$/.exec(req.url ?? '');
    const pod = m ? pods.get(`${decodeURIComponent(m[1])}/${decodeURIComponent(m[2])}`) : undefined;
    if (req.headers.authorization !== `Bearer ${token}`) res.writeHead(401).end('{"message":"Unauthorized"}');
    else if (pod) res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(pod));
    else res.writeHead(404).end('{"message":"not found"}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as import('node:net').AddressInfo).port;
  const runDir = tempDir(path.join(os.tmpdir(), 'icts-payload-run-'));
  fs.chmodSync(runDir, 0o750);
  fs.writeFileSync(path.join(runDir, 'istio-cni-kubeconfig'), istioKubeconfig(`https://127.0.0.1:${port}`, { caPem: pki.ca, token }), { mode: 0o600 });
  return {
    runDir,
    token,
    requests,
    pods,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }).then(() => fs.rmSync(runDir, { recursive: true, force: true })),
  };
}

/** The sidecar pod's ADD as the payload-in-a-root tests send it: prevResult, network config, CNI env. */
export const SIDECAR_PREV_RESULT = {
  cniVersion: '1.0.0',
  interfaces: [{ name: 'eth0', sandbox: '/run/netns/x' }],
  ips: [{ address: '10.0.0.2/24', interface: 0 }],
};
export const sidecarConf = (runDir: string): string => pluginConf(runDir, SIDECAR_PREV_RESULT);
export const sidecarEnv = (command: string, netns: string): Record<string, string> => ({
  CNI_COMMAND: command,
  CNI_CONTAINERID: 'c0ffee',
  CNI_NETNS: netns,
  CNI_IFNAME: 'eth0',
  CNI_PATH: '/opt/cni/bin',
  CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1',
});
