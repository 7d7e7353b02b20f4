// The real-runtime e2e world: a private state dir, the kube API stand-in, the conflist and
// kubeconfig as Istio's install-cni writes them (made with the project's own installer code),
// the sandbox image, a private containerd, and helpers to look inside pod network namespaces.
import * as assert from 'node:assert/strict';
import { ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { insertCNIConfig } from '../../../src/installer/cniconfig';
import { installConfig, parseEnablementSelectors, pluginConfigText } from '../../../src/installer/config';
import { createKubeConfig } from '../../../src/installer/kubeconfig';
import { AgentDirPaths } from '../../support/agent-proc';
import { PACKAGE_ROOT } from '../../support/conformance';
import { PrivateContainerd, killStrays, processes } from './containerd';
import { SandboxStatus, kubeletSandboxConfig, sandboxNetnsPath } from './cri';
import { KubeApiStandIn } from '../../support/kube-api';
import { sh } from '../../support/root';
import { SELECTORS_YAML } from '../../support/selectors';
import { makePki } from '../../support/tls';
import { buildPauseImage } from './pause-image';
import { PodSpecLite } from './pods';

export const BIN = path.join(PACKAGE_ROOT, 'bin', 'istio-cni-ts.js');
export const PROBE_SERVER = path.join(PACKAGE_ROOT, 'dist', 'test', 'fixtures', 'probe-server.js');
export const PROBE_CLIENT = path.join(PACKAGE_ROOT, 'dist', 'test', 'fixtures', 'probe-client.js');

/** The plugin type: the name Istio's install-cni gives the binary and the conflist entry. */
export const PLUGIN_TYPE = 'istio-cni';
/** The keys of the plugin entry install-cni chains into the conflist, sorted. */
export const PLUGIN_ENTRY_KEYS = [
  'ambient_enabled',
  'cni_agent_run_dir',
  'dns',
  'enable_ambient_detection_retry',
  'enablement_selectors',
  'exclude_namespaces',
  'ipam',
  'name',
  'native_nftables',
  'plugin_log_level',
  'pod_namespace',
  'type',
];
export const NETWORK_NAME = 'k8s-pod-network';
export const EXCLUDED_NAMESPACES = ['kube-system'];
const CNI_PLUGIN_DIRS = ['/usr/lib/cni', '/opt/cni/bin'];
const TOOLS = ['containerd', 'containerd-shim-runc-v2', 'runc', 'ctr', 'unshare', 'nsenter', 'setpriv', 'mount', 'nft', 'ip', 'gcc', 'openssl'];

/**
 * Host paths the test must never touch (the last is libcni's result cache): whether each exists,
 * and what it holds, before and after. (Not mtimes: a system containerd may well be running.)
 */
export const HOST_PATHS = ['/etc/cni/net.d', '/var/lib/containerd', '/run/containerd', '/var/lib/cni'];

/** Fails (never skips) when the test cannot run here, saying what to install. */
export function requirePrerequisites(): string {
  if (process.getuid?.() !== 0) throw new Error('the containerd e2e test needs root (it runs containerd and enters pod network namespaces)');
  const missing = TOOLS.filter((t) => spawnSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' }).status !== 0);
  if (missing.length) throw new Error(`the containerd e2e test needs ${missing.join(', ')} on PATH: run scripts/install-system-deps.sh`);
  const dir = CNI_PLUGIN_DIRS.find((d) => ['bridge', 'host-local', 'portmap', 'loopback'].every((p) => fs.existsSync(path.join(d, p))));
  if (!dir)
    throw new Error(
      `the reference CNI plugins (bridge, host-local, portmap, loopback) are in none of ${CNI_PLUGIN_DIRS.join(', ')}: run scripts/install-system-deps.sh (containernetworking-plugins)`,
    );
  if (!fs.existsSync(path.join(PACKAGE_ROOT, 'dist', 'src', 'main.js'))) throw new Error('dist/ is not built: run `npx tsc -p .` first');
  if (!fs.existsSync(PROBE_SERVER)) throw new Error(`${PROBE_SERVER} missing: run the build`);
  return dir;
}

export function hostPathState(): Record<string, string> {
  return Object.fromEntries(
    HOST_PATHS.map((p) => {
      try {
        const st = fs.statSync(p);
        return [p, st.isDirectory() ? `[${fs.readdirSync(p).sort().join(',')}]` : 'file'];
      } catch {
        return [p, 'absent'];
      }
    }),
  );
}

/** `nft list ruleset` in a network namespace. */
export const ruleset = (nsPath: string): string => sh(['nsenter', `--net=${nsPath}`, 'nft', 'list', 'ruleset']);

/** The ruleset nft lists after applying `text` in a fresh, throwaway network namespace. */
export function referenceRuleset(text: string): string {
  return sh(['unshare', '--net', 'sh', '-c', 'nft -f - && nft list ruleset'], text);
}

/** `istio-cni-ts rules` output, run with the plugin's clean environment (containerd gives it PATH only). */
export function rulesCli(args: readonly string[]): string {
  const r = spawnSync(process.execPath, [BIN, 'rules', ...args], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
  assert.equal(r.status, 0, `istio-cni-ts rules ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** eth0's first IPv4 address and its MTU in a network namespace. */
export function eth0(nsPath: string): { ip?: string; mtu?: number } {
  const links = JSON.parse(sh(['nsenter', `--net=${nsPath}`, 'ip', '-j', '-4', 'addr', 'show', 'dev', 'eth0'])) as {
    mtu: number;
    addr_info: { local: string }[];
  }[];
  return { ip: links[0]?.addr_info[0]?.local, mtu: links[0]?.mtu };
}

/** How long each step of an e2e run took, noted as it goes and printed at the end (min/avg/max). */
export class Timings {
  private readonly started = performance.now();
  private readonly steps: Record<string, number[]> = {};
  readonly note = (step: string, ms: number): void => {
    (this.steps[step] ??= []).push(ms);
  };

  print(title: string): void {
    const lines = Object.entries(this.steps).map(
      ([k, v]) =>
        `  ${k}: n=${v.length} min/avg/max ${Math.min(...v).toFixed(0)}/${(v.reduce((x, y) => x + y, 0) / v.length).toFixed(0)}/${Math.max(...v).toFixed(0)} ms`,
    );
    process.stdout.write(`${title}:\n${lines.join('\n')}\n  whole file: ${((performance.now() - this.started) / 1000).toFixed(1)} s\n`);
  }
}

/**
 * The node agent's environment as the DaemonSet's ConfigMap sets it on the e2e node: the API at
 * 127.0.0.1:`apiPort`, our entry chained with the namespaces the world excludes, native nftables,
 * debug logs, and no repair controller (test/root/agent covers it; here it would only add API
 * traffic). `extra` adds to it or overrides it.
 */
export function agentEnv(apiPort: number, extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    KUBERNETES_SERVICE_HOST: '127.0.0.1',
    KUBERNETES_SERVICE_PORT: String(apiPort),
    CHAINED_CNI_PLUGIN: 'true',
    EXCLUDE_NAMESPACES: EXCLUDED_NAMESPACES.join(','),
    POD_NAMESPACE: 'istio-system',
    NATIVE_NFTABLES: 'true',
    PLUGIN_LOG_LEVEL: 'debug',
    AGENT_LOG_LEVEL: 'debug',
    REPAIR_ENABLED: 'false',
    ...extra,
  };
}

export interface RunningPod {
  spec: PodSpecLite;
  id: string;
  ip: string;
  /** CNI_NETNS as containerd gave it to the plugins (a path in containerd's mount namespace). */
  netns: string;
  /** The same namespace reached from the test. */
  nsPath: string;
  netnsIno: number;
  pausePid: number;
  /** An open fd on the netns: keeps it alive after StopPodSandbox so DEL's work can be checked. */
  heldFd?: number;
  runMs: number;
}

export interface SetupOptions {
  /**
   * Default true: our plugin is installed as install-cni would leave it (the `istio-cni` entry
   * chained into the conflist, the kubeconfig, `istio-cni` in the bin dir). false: only the
   * node's primary network (bridge → portmap) and the service account, for a test whose node
   * agent installs the plugin itself.
   */
  installPlugin?: boolean;
}

export class E2eWorld {
  readonly dir = `/tmp/icts-e2e-${process.pid}`;
  readonly cniBinDir = path.join(this.dir, 'cni', 'bin');
  readonly cniConfDir = path.join(this.dir, 'cni', 'net.d');
  readonly ipamDir = path.join(this.dir, 'cni', 'ipam');
  /** cni_agent_run_dir: where install-cni writes istio-cni-kubeconfig. */
  readonly agentRunDir = path.join(this.dir, 'istio-cni-run');
  readonly bridge = `ie2e${process.pid}`.slice(0, 15);
  readonly subnet = '10.253.7.0/24';
  readonly sandboxImage = 'localhost/icts-e2e/pause:1';
  readonly token = `e2e-token-${process.pid}-${Math.random().toString(36).slice(2)}`;
  readonly api = Object.assign(new KubeApiStandIn(makePki()), { token: this.token });
  readonly ctrd: PrivateContainerd;
  readonly conflist = path.join(this.cniConfDir, '10-e2e.conflist');
  /** The node agent's service account mount (token, ca.crt) for the API stand-in. */
  readonly saDir = path.join(this.dir, 'serviceaccount');
  /** Processes the test starts that must not outlive it (a node agent, say): killed on emergency cleanup. */
  readonly daemons: ChildProcess[] = [];
  readonly hostBefore = hostPathState();
  readonly children: ChildProcess[] = [];
  /** Every sandbox started, for teardown. */
  readonly pods: RunningPod[] = [];
  private tornDown = false;

  /** `runtimes`: extra runtime handlers with CNI config dirs of their own (PrivateContainerd). */
  constructor(
    private readonly refPluginDir: string,
    runtimes: { name: string; cniConfDir: string }[] = [],
  ) {
    this.ctrd = new PrivateContainerd({
      runtimes,
      dir: path.join(this.dir, 'containerd'),
      cniBinDir: this.cniBinDir,
      cniConfDir: this.cniConfDir,
      sandboxImage: this.sandboxImage,
      pathEnv: [path.dirname(process.execPath), '/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'].join(':'),
      marker: `${this.dir}/`,
    });
  }

  get cri() {
    if (!this.ctrd.cri) throw new Error('containerd is not running');
    return this.ctrd.cri;
  }

  /** The node agent's directory flags for this node: `src` is its CNI_BIN_SOURCE_DIR. */
  agentDirs(src: string): AgentDirPaths {
    return { net: this.cniConfDir, bin: this.cniBinDir, src, run: this.agentRunDir, sa: this.saDir };
  }

  /**
   * A payload dir whose `istio-cni` is a launcher of this checkout's plugin (containerd's PATH has
   * node), so a test needs only the build. Its command line names the bin dir it is copied to, so
   * a stray plugin process of a killed run is found like any other.
   */
  launcherPayload(): string {
    const dir = path.join(this.dir, 'payload');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(
      path.join(dir, 'istio-cni'),
      [
        '#!/usr/bin/env node',
        "// e2e payload: the CNI plugin of this checkout's build (the image ships the self-contained one).",
        `require(${JSON.stringify(BIN)});`,
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    return dir;
  }

  /** `rules --dry-run --pod FILE` for the pod object the API stand-in serves. */
  rulesForPod(spec: PodSpecLite): string {
    const file = path.join(this.dir, `${spec.namespace}_${spec.name}.json`);
    fs.writeFileSync(file, JSON.stringify(spec.pod));
    return rulesCli(['--dry-run', '--pod', file]);
  }

  /**
   * The node's primary network (bridge + host-local, then portmap) as its own CNI would write it.
   * No gateway address and no masquerading: the host's addresses, routes, forwarding sysctl and
   * iptables stay as they are.
   */
  primaryConflist(): string {
    return JSON.stringify({
      cniVersion: '1.0.0',
      name: NETWORK_NAME,
      plugins: [
        {
          type: 'bridge',
          bridge: this.bridge,
          isGateway: false,
          ipMasq: false,
          hairpinMode: false,
          ipam: { type: 'host-local', ranges: [[{ subnet: this.subnet }]], dataDir: this.ipamDir },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    });
  }

  async setup(opts: SetupOptions = {}): Promise<void> {
    for (const d of [this.cniBinDir, this.cniConfDir, this.ipamDir, this.agentRunDir]) fs.mkdirSync(d, { recursive: true });
    await this.api.start();

    // The node agent's view: its service account files and the API address, as install-cni reads them.
    const saDir = this.saDir;
    this.api.writeServiceAccount(saDir);
    if (opts.installPlugin === false) {
      fs.writeFileSync(this.conflist, this.primaryConflist());
      // containerd sets up the pod's lo with the loopback plugin itself, outside the conflist.
      for (const p of ['bridge', 'host-local', 'portmap', 'loopback']) fs.symlinkSync(path.join(this.refPluginDir, p), path.join(this.cniBinDir, p));
      await this.startContainerd();
      return;
    }
    const cfg = installConfig({
      mountedCNINetDir: this.cniConfDir,
      cniAgentRunDir: this.agentRunDir,
      pluginLogLevel: 'debug',
      excludeNamespaces: EXCLUDED_NAMESPACES,
      podNamespace: 'istio-system',
      k8sServiceHost: '127.0.0.1',
      k8sServicePort: String(this.api.port),
      k8sServiceAccountPath: saDir,
      cniBinTargetDirs: [this.cniBinDir],
      nativeNftables: true,
      enablementSelectors: parseEnablementSelectors('AMBIENT_ENABLEMENT_SELECTOR', SELECTORS_YAML),
    });
    fs.writeFileSync(path.join(this.agentRunDir, 'istio-cni-kubeconfig'), createKubeConfig(cfg).full, { mode: 0o600 });

    // The node's primary network, and our entry chained after it exactly as install-cni inserts it.
    fs.writeFileSync(this.conflist, insertCNIConfig(pluginConfigText(cfg), this.primaryConflist(), PLUGIN_TYPE));

    // Plugins: the distro's reference ones, and ours installed under Istio's name.
    // containerd sets up the pod's lo with the loopback plugin itself, outside the conflist.
    for (const p of ['bridge', 'host-local', 'portmap', 'loopback']) fs.symlinkSync(path.join(this.refPluginDir, p), path.join(this.cniBinDir, p));
    fs.symlinkSync(BIN, path.join(this.cniBinDir, PLUGIN_TYPE));
    await this.startContainerd();
  }

  /** The pause image, containerd to CRI-ready, the image imported. */
  private async startContainerd(): Promise<void> {
    const tarball = buildPauseImage(path.join(this.dir, 'image'), this.sandboxImage);
    await this.ctrd.start();
    // For a later run, should this one be killed before its teardown (see sweepStaleRuns).
    fs.writeFileSync(path.join(this.dir, 'owner.json'), JSON.stringify({ pid: process.pid, containerdPid: this.ctrd.pid }));
    this.ctrd.importImage(tarball);
    for (let i = 0; i < 50 && !(await this.cri.imageExists(this.sandboxImage)); i++) await sleep(100);
    if (!(await this.cri.imageExists(this.sandboxImage))) throw new Error(`CRI does not see ${this.sandboxImage} after import`);
  }

  /** RunPodSandbox as kubelet calls it, then what the test needs to look inside the pod. */
  async runPod(spec: PodSpecLite, runtimeHandler?: string): Promise<RunningPod> {
    const t0 = performance.now();
    const id = await this.cri.runPodSandbox(kubeletSandboxConfig(spec, path.join(this.dir, 'pod-logs'), `/icts-e2e-${process.pid}`), runtimeHandler);
    const runMs = performance.now() - t0;
    const { status, info } = await this.cri.podSandboxStatus(id);
    const netns = sandboxNetnsPath(info);
    const nsPath = this.ctrd.inNs(netns);
    const netnsIno = fs.statSync(nsPath).ino;
    this.ctrd.podNetns.add(netnsIno);
    const pod = { spec, id, ip: status.network?.ip ?? '', netns, nsPath, netnsIno, pausePid: info.pid, runMs, heldFd: fs.openSync(nsPath, 'r') };
    this.pods.push(pod);
    return pod;
  }

  async status(id: string): Promise<SandboxStatus> {
    return (await this.cri.podSandboxStatus(id)).status;
  }

  /** A path that reaches the pod netns while the fd is held, even after containerd unmounted it. */
  heldPath(pod: RunningPod): string {
    if (pod.heldFd === undefined) throw new Error('netns fd not held');
    return `/proc/${process.pid}/fd/${pod.heldFd}`;
  }

  release(pod: RunningPod): void {
    if (pod.heldFd !== undefined) fs.closeSync(pod.heldFd);
    pod.heldFd = undefined;
    // Once let go, its inode number can be given to another netns: stop matching on it.
    this.ctrd.podNetns.delete(pod.netnsIno);
  }

  /** Lines the plugin wrote to stderr (containerd passes them to its own log), parsed. */
  pluginLog(): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    for (const line of this.ctrd.logText().split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        out.push(JSON.parse(line));
      } catch {
        // not one of ours
      }
    }
    return out;
  }

  /**
   * How long containerd's CNI ADD over the whole chain took per sandbox, from its debug log
   * ("begin cni setup" to "cni result").
   */
  cniAddMs(): number[] {
    return [...this.cniAddMsBySandbox().values()];
  }

  /** The same, keyed by pod sandbox id. */
  cniAddMsBySandbox(): Map<string, number> {
    const begin = new Map<string, number>();
    const out = new Map<string, number>();
    for (const line of this.ctrd.logText().split('\n')) {
      const isBegin = line.includes('msg="begin cni setup"');
      if (!isBegin && !line.includes('msg="cni result: ')) continue;
      const t = Date.parse(/^time="([^"]+)"/.exec(line)?.[1] ?? '');
      const id = / podsandboxid=([0-9a-f]+)\s*$/.exec(line)?.[1];
      if (Number.isNaN(t) || !id) continue;
      if (isBegin) begin.set(id, t);
      else if (begin.has(id)) out.set(id, t - begin.get(id)!);
    }
    return out;
  }

  /** host-local's reservations: one file per allocated address. */
  allocatedIps(): string[] {
    const d = path.join(this.ipamDir, NETWORK_NAME);
    return fs.existsSync(d)
      ? fs
          .readdirSync(d)
          .filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f))
          .sort()
      : [];
  }

  /**
   * Pod netns mounts containerd still has: those under the state dir. Its mount namespace also
   * holds copies of the host's /run/netns mounts from when it started, and those vanish whenever
   * their owner deletes them on the host (unlinking a mount point detaches it in every
   * namespace), so other tests' netns must not be counted.
   */
  netnsMounts(): string[] {
    if (!this.ctrd.running()) return [];
    return fs
      .readFileSync(`/proc/${this.ctrd.pid}/mountinfo`, 'utf8')
      .split('\n')
      .filter((l) => / nsfs /.test(l) && l.includes('/netns/') && (l.split(' ')[4] ?? '').startsWith(`${this.dir}/`));
  }

  /** Starts a probe server in a netns (optionally as another UID) and waits until it listens. */
  async startProbe(nsPath: string, port: number, label: string, uid?: number): Promise<void> {
    const asUid = uid === undefined ? [] : ['setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups'];
    const child = spawn('nsenter', [`--net=${nsPath}`, ...asUid, process.execPath, PROBE_SERVER, '0.0.0.0', String(port), 'tcp', label], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.children.push(child);
    await new Promise<void>((resolve, reject) => {
      let err = '';
      const timer = setTimeout(() => reject(new Error(`probe server ${label} did not start: ${err}`)), 10_000);
      child.stderr!.on('data', (d) => (err += d));
      child.stdout!.on('data', (d) => {
        if (String(d).includes('ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`probe server ${label} exited ${code}: ${err}`));
      });
    });
  }

  stopProbes(): void {
    for (const c of this.children.splice(0)) c.kill('SIGKILL');
  }

  /** One TCP connection from inside a netns; the reply of whichever server accepted it. */
  probe(nsPath: string, host: string, port: number, uid?: number): { label?: string; origDst?: { address: string; port: number } | null; error?: string } {
    const asUid = uid === undefined ? [] : ['setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups'];
    const r = spawnSync('nsenter', [`--net=${nsPath}`, ...asUid, process.execPath, PROBE_CLIENT, host, String(port), 'tcp', '3000'], {
      encoding: 'utf8',
      timeout: 10_000,
    });
    try {
      return JSON.parse(r.stdout);
    } catch {
      return { error: `${r.stdout}${r.stderr}`.trim() || `exit ${r.status}` };
    }
  }

  /**
   * Synchronous last resort when the process exits or is signalled before teardown ran: kill
   * containerd and everything it started, delete the bridge and the state dir.
   */
  emergencyCleanup(): void {
    if (this.tornDown) return;
    this.tornDown = true;
    for (const c of [...this.children, ...this.daemons]) c.kill('SIGKILL');
    if (this.ctrd.running()) process.kill(this.ctrd.pid, 'SIGKILL');
    killStrays({ mntNs: this.ctrd.mntNs, podNetns: this.ctrd.podNetns, runcRoot: this.ctrd.runcRoot, marker: `${this.dir}/` });
    this.ctrd.releaseMountNs();
    spawnSync('ip', ['link', 'del', 'dev', this.bridge], { stdio: 'ignore' });
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** Runs emergencyCleanup on exit, SIGINT and SIGTERM. */
  cleanUpOnExit(): void {
    process.once('exit', () => this.emergencyCleanup());
    for (const [sig, n] of [
      ['SIGINT', 2],
      ['SIGTERM', 15],
    ] as const) {
      process.once(sig, () => {
        this.emergencyCleanup();
        process.exit(128 + n);
      });
    }
  }

  /**
   * Stops containerd and everything it started, removes the bridge and the state dir. Returns
   * every problem found on the way (leftover sandboxes or processes, mounts on the host), so the
   * last test can assert there were none; safe to call twice.
   */
  async teardown(): Promise<string[]> {
    if (this.tornDown) return [];
    this.tornDown = true;
    const problems: string[] = [];
    this.stopProbes();
    problems.push(...(await this.ctrd.stop()).map((l) => `left behind: ${l}`));
    await this.api.close();
    const leftPlugins = processes().filter((p) => p.cmdline.includes(this.cniBinDir));
    problems.push(...leftPlugins.map((p) => `plugin process ${p.pid} still running: ${p.cmdline}`));
    for (const pod of this.pods) this.release(pod);
    if (spawnSync('ip', ['link', 'show', 'dev', this.bridge], { stdio: 'ignore' }).status === 0) {
      const ports = execFileSync('ip', ['-o', 'link', 'show', 'master', this.bridge], { encoding: 'utf8' }).trim();
      if (ports) problems.push(`veths still on the bridge: ${ports}`);
      execFileSync('ip', ['link', 'del', 'dev', this.bridge]);
    }
    const hostMounts = fs
      .readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .filter((l) => l.split(' ')[4]?.startsWith(`${this.dir}/`) || l.split(' ')[4] === this.dir);
    for (const m of hostMounts) {
      problems.push(`mount visible on the host: ${m}`);
      spawnSync('umount', ['-l', m.split(' ')[4]]);
    }
    if (process.env.ICTS_E2E_KEEP_LOG === '1' && fs.existsSync(this.ctrd.logFile)) {
      fs.copyFileSync(this.ctrd.logFile, `${this.dir}.containerd.log`);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
    return problems;
  }
}

/**
 * Cleans up after earlier runs that were killed before their teardown: a /tmp/icts-e2e-<pid>
 * whose process is gone. Runs of live processes (another developer's, say) are left alone.
 */
export function sweepStaleRuns(): string[] {
  const swept: string[] = [];
  for (const name of fs.readdirSync('/tmp')) {
    const m = /^icts-e2e-(\d+)$/.exec(name);
    if (!m || Number(m[1]) === process.pid) continue;
    try {
      process.kill(Number(m[1]), 0);
      continue; // still running
    } catch {
      // its owner is gone
    }
    const dir = path.join('/tmp', name);
    // Its namespaces may be gone and their inode numbers reused: match on the dir and runc's state only.
    const killed = killStrays({ runcRoot: path.join(dir, 'containerd', 'runc'), marker: `${dir}/` });
    spawnSync('ip', ['link', 'del', 'dev', `ie2e${m[1]}`.slice(0, 15)], { stdio: 'ignore' });
    fs.rmSync(dir, { recursive: true, force: true });
    swept.push(`${dir} (${killed.length} processes killed)`);
  }
  return swept;
}

/** The set-up of every e2e run: prerequisites checked, killed runs swept, a world cleaned up on exit. */
export function openWorld(say: (m: string) => void = (m) => process.stderr.write(`${m}\n`)): E2eWorld {
  const refPlugins = requirePrerequisites();
  const swept = sweepStaleRuns();
  if (swept.length) say(`cleaned up after killed e2e runs: ${swept.join(', ')}`);
  const world = new E2eWorld(refPlugins);
  world.cleanUpOnExit();
  return world;
}

/**
 * One e2e file's run: the world its set-up test opens and the timings noted along the way; at the
 * end (also after a failure) the world torn down and the timings printed.
 */
export class E2eRun {
  world?: E2eWorld;
  readonly timings = new Timings();
  readonly note = this.timings.note;

  /** Opens the world (openWorld); the set-up test calls it. */
  open(): E2eWorld {
    this.world = openWorld();
    return this.world;
  }

  /** The world; fails, pointing at the set-up test, when that did not get so far. */
  readonly w = (): E2eWorld => {
    if (!this.world) throw new Error('the e2e world was not set up (see the failure of the set-up test)');
    return this.world;
  };

  /** Tears the world down, saying what it had to clean up, and prints the timings under `title`. */
  async end(title: string): Promise<void> {
    const problems = await this.world?.teardown();
    if (problems?.length) process.stderr.write(`e2e teardown cleaned up:\n  ${problems.join('\n  ')}\n`);
    this.timings.print(title);
  }
}

/**
 * The last test of an e2e file: teardown found nothing left over, and no process of the run, no
 * bridge, no state dir remain; the host's CNI and containerd paths are as they were.
 */
export async function assertNothingLeft(world: E2eWorld, processesWhat = 'no process of this run'): Promise<void> {
  const ctrdPid = world.ctrd.pid;
  // Teardown checks that no process is left in containerd's mount namespace before letting it go.
  assert.deepEqual(await world.teardown(), []);
  assert.throws(() => process.kill(ctrdPid, 0), 'containerd is gone');
  assert.deepEqual(
    processes()
      .filter((p) => p.cmdline.includes(`${world.dir}/`))
      .map((p) => p.cmdline),
    [],
    processesWhat,
  );
  assert.equal(spawnSync('ip', ['link', 'show', 'dev', world.bridge]).status !== 0, true, 'bridge deleted');
  assert.ok(!fs.existsSync(world.dir), 'state dir removed');
  assert.deepEqual(hostPathState(), world.hostBefore, `untouched: ${Object.keys(world.hostBefore).join(', ')}`);
}
