// A private containerd with its CRI plugin, for the real-runtime e2e test. Everything it owns
// lives under one state directory:
//
//   <dir>/config.toml, containerd.log, containerd.sock   root/  state/  runc/  opt/
//   <dir>/ns-run      mounted on /run     inside containerd's own mount namespace
//   <dir>/ns-varlib   mounted on /var/lib inside containerd's own mount namespace
//
// containerd 1.6 puts shim sockets in /run/containerd/s and libcni caches results in
// /var/lib/cni, with no setting to move them. So containerd runs in a mount namespace of its own
// (unshare --mount, private propagation) where /run and /var/lib are bind mounts of directories
// under <dir>: the host's /run/containerd and /var/lib/cni are never touched, and every mount
// containerd makes (rootfs overlays, netns bind mounts, shm) exists only in that namespace and
// goes away with its last process. The test reaches those mounts through /proc/<pid>/root.
import { ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CriClient, criClient } from './cri';
import { alive } from '../../support/child-lines';

export interface ContainerdOptions {
  dir: string;
  cniBinDir: string;
  cniConfDir: string;
  sandboxImage: string;
  /** PATH for containerd and so for the CNI plugins it runs (node must be on it). */
  pathEnv: string;
  /** A path every process of this run names on its command line (the run's state dir). */
  marker: string;
  /**
   * More runc runtimes, each with a CNI config dir of its own (containerd's per-runtime
   * `cni_conf_dir`): a pod started with that runtime handler gets that dir's network.
   */
  runtimes?: { name: string; cniConfDir: string }[];
}

/** Lowering oom_score_adj needs CAP_SYS_RESOURCE; some VMs' root lacks it, and runc then fails. */
function canLowerOomScore(): boolean {
  return spawnSync('sh', ['-c', 'echo -1 > /proc/self/oom_score_adj'], { stdio: 'ignore' }).status === 0;
}

/** The command of the sandbox image (see pause-image.ts). */
export const SANDBOX_CMD = '/pause';

export interface ProcInfo {
  pid: number;
  cmdline: string;
}

/** Every process with its command line and namespace inodes (processes that vanish are skipped). */
export function processes(): (ProcInfo & { netNs?: number; mntNs?: number })[] {
  const out: (ProcInfo & { netNs?: number; mntNs?: number })[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const cmdline = fs.readFileSync(`/proc/${name}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      const ino = (ns: string) => {
        try {
          return fs.statSync(`/proc/${name}/ns/${ns}`).ino;
        } catch {
          return undefined;
        }
      };
      out.push({ pid: Number(name), cmdline, netNs: ino('net'), mntNs: ino('mnt') });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

export class PrivateContainerd {
  readonly sock: string;
  readonly endpoint: string;
  readonly configFile: string;
  readonly logFile: string;
  readonly runcRoot: string;
  pid = 0;
  /**
   * Inode of containerd's mount namespace (every shim shares it), valid while mntFd holds the
   * namespace: a freed namespace's inode number is given to the next new one.
   */
  mntNs = 0;
  private mntFd?: number;
  cri?: CriClient;
  private child?: ChildProcess;
  /** Network namespaces of sandboxes seen (inodes), to find stray processes in them at the end. */
  readonly podNetns = new Set<number>();

  constructor(readonly opts: ContainerdOptions) {
    this.sock = path.join(opts.dir, 'containerd.sock');
    this.endpoint = `unix://${this.sock}`;
    this.configFile = path.join(opts.dir, 'config.toml');
    this.logFile = path.join(opts.dir, 'containerd.log');
    this.runcRoot = path.join(opts.dir, 'runc');
  }

  config(): string {
    const d = this.opts.dir;
    const q = JSON.stringify; // TOML basic strings read JSON string escapes
    return `version = 2
root = ${q(path.join(d, 'root'))}
state = ${q(path.join(d, 'state'))}
# Snapshotters and plugins this test does not use: not probed.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = ${q(this.sock)}
[ttrpc]
  address = ${q(`${this.sock}.ttrpc`)}
[debug]
  level = "debug"

[plugins."io.containerd.internal.v1.opt"]
  path = ${q(path.join(d, 'opt'))}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = ${q(this.opts.sandboxImage)}
  # Pod netns bind mounts under state/ (inside containerd's mount namespace), not /var/run/netns.
  netns_mounts_under_state_dir = true
  # No cgroups and no AppArmor profile: nothing on the host outside <dir> changes.
  disable_cgroup = true
  disable_apparmor = true
  enable_selinux = false
  # Without CAP_SYS_RESOURCE, containerd's -998 for the sandbox cannot be set: clamp instead.
  restrict_oom_score_adj = ${!canLowerOomScore()}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = ${q(this.runcRoot)}
${(this.opts.runtimes ?? [])
  .map(
    (r) => `    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.${r.name}]
      runtime_type = "io.containerd.runc.v2"
      cni_conf_dir = ${q(r.cniConfDir)}
      cni_max_conf_num = 1
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.${r.name}.options]
        SystemdCgroup = false
        Root = ${q(this.runcRoot)}
`,
  )
  .join('')}  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = ${q(this.opts.cniBinDir)}
    conf_dir = ${q(this.opts.cniConfDir)}
    max_conf_num = 1
`;
  }

  /** Starts containerd in its own session and mount namespace and waits until CRI is ready. */
  async start(timeoutMs = 30_000): Promise<void> {
    const d = this.opts.dir;
    for (const sub of ['root', 'state', 'opt', 'runc', 'ns-run', 'ns-varlib/cni']) fs.mkdirSync(path.join(d, sub), { recursive: true });
    fs.writeFileSync(this.configFile, this.config());
    const log = fs.openSync(this.logFile, 'a');
    const script = 'set -e; mount --bind "$1" /run; mount --bind "$2" /var/lib; exec containerd --config "$3"';
    // detached: setsid(), so containerd and its shims are not in the test's session or process group.
    this.child = spawn(
      'unshare',
      ['--mount', '--propagation', 'private', '--', 'sh', '-c', script, 'sh', path.join(d, 'ns-run'), path.join(d, 'ns-varlib'), this.configFile],
      {
        detached: true,
        stdio: ['ignore', log, log],
        env: { PATH: this.opts.pathEnv, HOME: d, TMPDIR: d },
      },
    );
    fs.closeSync(log);
    this.child.unref();
    this.pid = this.child.pid ?? 0;
    if (!this.pid) throw new Error('could not start unshare/containerd');
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`containerd exited (${this.child.exitCode ?? this.child.signalCode}):\n${this.logTail()}`);
      }
      if (fs.existsSync(this.sock)) {
        this.cri ??= criClient(this.endpoint, 60_000);
        try {
          const conds = await this.cri.conditions();
          last = JSON.stringify(conds);
          if (['RuntimeReady', 'NetworkReady'].every((t) => conds.some((c) => c.type === t && c.status))) {
            this.mntFd = fs.openSync(`/proc/${this.pid}/ns/mnt`, 'r');
            this.mntNs = fs.fstatSync(this.mntFd).ino;
            return;
          }
        } catch (e) {
          last = (e as Error).message;
        }
      }
      await sleep(100);
    }
    throw new Error(`containerd not ready after ${timeoutMs} ms (last status: ${last}):\n${this.logTail()}`);
  }

  /** Imports an OCI image-layout tarball into the k8s.io namespace (the one CRI uses). */
  importImage(tarball: string): void {
    execFileSync('ctr', ['--address', this.sock, '--namespace', 'k8s.io', 'images', 'import', '--snapshotter', 'overlayfs', tarball], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  }

  /** A path inside containerd's mount namespace, reachable from the test's. */
  inNs(p: string): string {
    return `/proc/${this.pid}/root${p}`;
  }

  running(): boolean {
    if (!this.pid) return false;
    try {
      process.kill(this.pid, 0);
      return this.child?.exitCode === null && this.child?.signalCode === null;
    } catch {
      return false;
    }
  }

  logText(): string {
    try {
      return fs.readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  logTail(lines = 40): string {
    return this.logText().split('\n').slice(-lines).join('\n');
  }

  /**
   * Removes every sandbox left, stops containerd, ends any process it left (shims, sandbox
   * processes) by pid, and returns what it had to clean up that should not have been there.
   */
  async stop(): Promise<string[]> {
    const leftovers: string[] = [];
    if (this.running() && this.cri) {
      try {
        for (const s of await this.cri.listPodSandbox()) {
          leftovers.push(`sandbox ${s.metadata.namespace}/${s.metadata.name} (${s.id})`);
          await this.cri.stopPodSandbox(s.id).catch(() => undefined);
          await this.cri.removePodSandbox(s.id).catch(() => undefined);
        }
      } catch {
        // CRI not answering: the signals below still stop everything
      }
    }
    this.cri?.close();
    this.cri = undefined;
    if (this.running()) {
      process.kill(this.pid, 'SIGTERM');
      for (let i = 0; i < 50 && this.running(); i++) await sleep(100);
      if (this.running()) {
        leftovers.push(`containerd ${this.pid} ignored SIGTERM for 5 s`);
        process.kill(this.pid, 'SIGKILL');
      }
    }
    const strays = killStrays({ mntNs: this.mntNs, podNetns: this.podNetns, runcRoot: this.runcRoot, marker: this.opts.marker });
    leftovers.push(...strays.map((p) => `process ${p.pid}: ${p.cmdline}`));
    for (let i = 0; i < 30 && strays.some((p) => alive(p.pid)); i++) await sleep(100);
    if (this.mntNs) {
      const still = processes().filter((p) => p.mntNs === this.mntNs);
      leftovers.push(...still.map((p) => `process ${p.pid} survived SIGKILL in containerd's mount namespace: ${p.cmdline}`));
    }
    this.releaseMountNs();
    return leftovers;
  }

  /** Lets containerd's mount namespace (and whatever mounts are left in it) go. */
  releaseMountNs(): void {
    if (this.mntFd !== undefined) fs.closeSync(this.mntFd);
    this.mntFd = undefined;
    this.mntNs = 0;
  }
}

/**
 * Finds and SIGKILLs what a containerd run left: shims (they share containerd's mount namespace
 * and name its socket, under `marker`, on their command line), CNI plugins (run from under
 * `marker`), sandbox processes (in a pod netns still held, or named in runc's state under
 * `runcRoot`). Namespace inodes must be of namespaces the caller holds open, or they may
 * belong to someone else by now. Never the calling process. Synchronous, so it also works from
 * an exit or signal handler.
 */
export function killStrays(o: { mntNs?: number; podNetns?: ReadonlySet<number>; runcRoot: string; marker: string }): ProcInfo[] {
  const pids = new Set<number>();
  for (const p of processes()) {
    if (p.pid === process.pid) continue;
    if ((o.mntNs && p.mntNs === o.mntNs) || (p.netNs !== undefined && o.podNetns?.has(p.netNs)) || p.cmdline.includes(o.marker)) pids.add(p.pid);
  }
  const k8s = path.join(o.runcRoot, 'k8s.io');
  for (const id of fs.existsSync(k8s) ? fs.readdirSync(k8s) : []) {
    try {
      const st = JSON.parse(fs.readFileSync(path.join(k8s, id, 'state.json'), 'utf8'));
      const pid = st.init_process_pid;
      // The pid may have been reused since: only a sandbox process (our image runs /pause).
      if (typeof pid === 'number' && fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim() === SANDBOX_CMD) pids.add(pid);
    } catch {
      // no state
    }
  }
  const killed: ProcInfo[] = [];
  for (const pid of pids) {
    try {
      const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      process.kill(pid, 'SIGKILL');
      killed.push({ pid, cmdline });
    } catch {
      // gone meanwhile
    }
  }
  return killed;
}
