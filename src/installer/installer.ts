// The install loop (Istio's install.go): install everything, then watch and re-install when the
// node's CNI setup drifts; uninstall on request.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { copyBinaries, removePayloadDirs } from './binaries';
import { checkValidCNIConfig, createCNIConfigFile, removeFromConfig } from './cniconfig';
import { InstallConfig, cniConfFileMode } from './config';
import { atomicWrite, exists } from './fsutil';
import { kubeconfigPath, writeKubeConfigFile } from './kubeconfig';
import { Logger, nullLogger } from '../log/logger';
import { AbortedError, createFileWatcher, sleep } from './watcher';

export type InstallResult = 'SUCCESS' | 'COPY_BINARIES_FAILURE' | 'CREATE_KUBECONFIG_FAILURE' | 'CREATE_CNI_CONFIG_FAILURE';

/** What the agent wants to know: metrics and readiness. */
export interface InstallerObserver {
  installResult?(result: InstallResult): void;
  ready?(ready: boolean): void;
}

export interface InstallerOptions {
  log?: Logger;
  observer?: InstallerObserver;
  /** While waiting for a primary CNI config: re-check period (ms). */
  pollMs?: number;
  /** While installed and watching: re-validate this often even without a file event (ms; 0 = never). */
  resyncMs?: number;
  /** Retry delays after a failed install pass (ms). */
  retryMinMs?: number;
  retryMaxMs?: number;
  now?: () => number;
}

export class InstallError extends Error {
  override name = 'InstallError';
  constructor(
    readonly result: InstallResult,
    message: string,
    override readonly cause?: unknown,
  ) {
    super(message);
  }
}

function isAbort(e: unknown): boolean {
  return e instanceof AbortedError;
}

/**
 * Istio's installation throttle: a token bucket of 0.2/s with burst 1 used as a detector. When a
 * pass comes sooner than 5 s after the previous one we pause up to 1 s; more than five such passes
 * in a row means something keeps reverting our config, and we say so.
 */
export class InstallThrottle {
  private tokens: number;
  private last: number;
  hits = 0;
  constructor(
    private readonly log: Logger,
    private readonly configPath: () => string,
    private readonly now: () => number = Date.now,
    private readonly rate = 0.2,
    private readonly burst = 1,
  ) {
    this.tokens = burst;
    this.last = now();
  }

  /** Takes a token; returns how long (ms) until it would have been available. */
  reserve(): number {
    const t = this.now();
    const elapsed = Math.max(0, t - this.last) / 1000;
    this.tokens = Math.min(this.burst, this.tokens + elapsed * this.rate) - 1;
    this.last = t;
    return this.tokens >= 0 ? 0 : (-this.tokens / this.rate) * 1000;
  }

  async throttle(signal?: AbortSignal): Promise<void> {
    const delay = this.reserve();
    if (delay === 0) {
      this.hits = 0;
      return;
    }
    await sleep(Math.min(delay, 1000), signal);
    this.hits++;
    if (this.hits > 5) {
      const hint = this.configPath().includes('cilium') ? " Hint: Cilium CNI was detected; ensure 'cni.exclusive=false' in the Cilium configuration." : '';
      this.log.warn(
        'Configuration has been reconciled multiple times in a short period of time. ' +
          `This may be due to a conflicting component constantly reverting our work.${hint}`,
      );
    }
  }
}

export class Installer {
  /** Our working copy: checks record the primary config name in `cfg.cniConfName`, as upstream does. */
  readonly cfg: InstallConfig;
  /** The CNI config file we last wrote or validated ("" before the first pass). */
  cniConfigFilepath = '';
  kubeconfigFilepath: string;
  private readonly log: Logger;
  private readonly observer: InstallerObserver;
  private readonly opts: Required<Pick<InstallerOptions, 'pollMs' | 'resyncMs' | 'retryMinMs' | 'retryMaxMs' | 'now'>>;
  private tokenDigest = '';
  private isReady = false;

  constructor(cfg: InstallConfig, opts: InstallerOptions = {}) {
    this.cfg = { ...cfg, cniBinTargetDirs: [...cfg.cniBinTargetDirs] };
    this.kubeconfigFilepath = kubeconfigPath(cfg);
    this.log = opts.log ?? nullLogger;
    this.observer = opts.observer ?? {};
    this.opts = {
      pollMs: opts.pollMs ?? 1000,
      resyncMs: opts.resyncMs ?? 30_000,
      retryMinMs: opts.retryMinMs ?? 1000,
      retryMaxMs: opts.retryMaxMs ?? 30_000,
      now: opts.now ?? Date.now,
    };
  }

  get ready(): boolean {
    return this.isReady;
  }

  private setReady(ready: boolean): void {
    if (this.isReady !== ready) this.log.debug(ready ? 'install ready' : 'install not ready');
    this.isReady = ready;
    this.observer.ready?.(ready);
  }

  private fail(result: InstallResult, what: string, e: unknown): never {
    this.observer.installResult?.(result);
    const msg = `${what}: ${(e as Error).message ?? String(e)}`;
    if (/read-only file system|EROFS/i.test(msg)) {
      this.log.warn(
        'hint: some Kubernetes environments need a different CNI directory; set CNI_BIN_DIR / MOUNTED_CNI_NET_DIR ' +
          '(global.platform in Istio charts) to where this platform keeps them',
      );
    }
    throw new InstallError(result, msg, e);
  }

  private async readTokenDigest(): Promise<string> {
    try {
      const t = await fsp.readFile(path.join(this.cfg.k8sServiceAccountPath, 'token'));
      return crypto.createHash('sha256').update(t).digest('hex');
    } catch {
      return '';
    }
  }

  /** One install pass: payload, kubeconfig, CNI config (rewritten only when not valid). */
  async installAll(signal?: AbortSignal): Promise<Set<string>> {
    let bins: Set<string>;
    try {
      bins = await copyBinaries(this.cfg.cniBinSourceDir, this.cfg.cniBinTargetDirs, this.cfg.pluginType, this.log);
    } catch (e) {
      this.fail('COPY_BINARIES_FAILURE', 'copy binaries', e);
    }
    try {
      this.tokenDigest = await this.readTokenDigest();
      this.kubeconfigFilepath = await writeKubeConfigFile(this.cfg, this.log);
    } catch (e) {
      this.fail('CREATE_KUBECONFIG_FAILURE', 'write kubeconfig', e);
    }
    const deps = { log: this.log, pollMs: this.opts.pollMs };
    try {
      const v = await checkValidCNIConfig(signal, this.cfg, this.cniConfigFilepath, deps);
      if (!v.valid) {
        this.log.info(`configuration requires updates, (re)writing CNI config file: ${v.reason}`);
        this.cniConfigFilepath = await createCNIConfigFile(signal, this.cfg, deps);
      } else {
        this.log.info(`valid Istio config present in node-level CNI file ${this.cniConfigFilepath}, not modifying`);
      }
    } catch (e) {
      if (isAbort(e)) throw e;
      this.fail('CREATE_CNI_CONFIG_FAILURE', 'create CNI config file', e);
    }
    return bins;
  }

  /** Everything we installed is still in place (config, binaries, token unchanged since the kubeconfig). */
  private async stillInstalled(signal: AbortSignal | undefined, bins: Set<string>): Promise<string | undefined> {
    const v = await checkValidCNIConfig(signal, this.cfg, this.cniConfigFilepath, { log: this.log, pollMs: this.opts.pollMs });
    if (!v.valid) return v.reason;
    for (const dir of this.cfg.cniBinTargetDirs) {
      for (const b of bins) if (!exists(path.join(dir, b))) return `binary ${path.join(dir, b)} is missing`;
    }
    if ((await this.readTokenDigest()) !== this.tokenDigest) return 'service account token changed';
    if (!exists(this.kubeconfigFilepath)) return `kubeconfig ${this.kubeconfigFilepath} is missing`;
    return undefined;
  }

  /**
   * Istio's sleepWatchInstall: start watching (our binaries, the net dir, the service account
   * dir), check that all is still in place, report ready, and return at the first change. We also
   * re-validate every `resyncMs` without an event, so a lost inotify event cannot leave a broken
   * install unnoticed.
   */
  async sleepWatchInstall(signal: AbortSignal | undefined, bins: Set<string>): Promise<string> {
    const targets = [
      ...this.cfg.cniBinTargetDirs.flatMap((d) => [...bins].map((b) => path.join(d, b))),
      this.cfg.mountedCNINetDir,
      this.cfg.k8sServiceAccountPath,
    ];
    const watcher = createFileWatcher(targets, { log: this.log, pollMs: this.opts.resyncMs });
    try {
      for (;;) {
        const problem = await this.stillInstalled(signal, bins);
        if (problem !== undefined) return problem;
        if (watcher.changed) return 'file change';
        if (!this.isReady) {
          this.setReady(true);
          this.observer.installResult?.('SUCCESS');
        }
        const r = await watcher.wait(signal);
        if (r === 'event') return 'file change';
      }
    } finally {
      this.setReady(false);
      watcher.close();
    }
  }

  /** Waits after a failed pass: until something we watch changes, or the retry delay passes. */
  private async backoff(signal: AbortSignal | undefined, attempt: number): Promise<void> {
    const ms = Math.min(this.opts.retryMaxMs, this.opts.retryMinMs * 2 ** Math.min(attempt, 16));
    const w = createFileWatcher([this.cfg.cniBinSourceDir, ...this.cfg.cniBinTargetDirs, this.cfg.mountedCNINetDir, this.cfg.k8sServiceAccountPath], {
      pollMs: ms,
    });
    try {
      // A change right away is common (we may be the one who just wrote); wait a little anyway.
      await sleep(Math.min(ms, this.opts.retryMinMs), signal);
      await w.wait(signal);
    } finally {
      w.close();
    }
  }

  /**
   * Installs, then keeps the installation in place until `signal` aborts (then resolves). A failed
   * pass is logged, counted and retried with backoff: unlike upstream, the agent does not exit
   * (and so does not uninstall and crash-loop) because the node's CNI dir is briefly unusable.
   */
  async run(signal: AbortSignal): Promise<void> {
    try {
      let bins = await this.installWithRetry(signal);
      this.log.info('initial installation complete, start watching for re-installation');
      const throttle = new InstallThrottle(this.log, () => this.cniConfigFilepath, this.opts.now);
      for (;;) {
        await throttle.throttle(signal);
        const why = await this.sleepWatchInstall(signal, bins);
        this.log.info(`detected changes to the node-level CNI setup (${why}); checking whether configs or binaries need redeploying`);
        // Only the binaries of the first install are watched, as upstream does.
        const again = await this.installWithRetry(signal);
        if (bins.size === 0) bins = again;
        this.log.info('Istio CNI configuration and binaries validated/reinstalled');
      }
    } catch (e) {
      if (isAbort(e)) return;
      throw e;
    }
  }

  private async installWithRetry(signal: AbortSignal): Promise<Set<string>> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.installAll(signal);
      } catch (e) {
        if (isAbort(e)) throw e;
        this.log.error(`installation failed, will retry: ${(e as Error).message}`);
        await this.backoff(signal, attempt);
      }
    }
  }

  /**
   * Removes what we installed: our entry from a chained config (the file is otherwise left as it
   * is), or our own config file; the kubeconfig; the plugin binary.
   */
  async cleanup(): Promise<void> {
    this.log.info('cleaning up CNI installation');
    const file = this.cniConfigFilepath;
    if (file !== '' && exists(file)) {
      const ownedFile = this.cfg.istioOwnedCNIConfig && path.resolve(file) === path.resolve(this.cfg.mountedCNINetDir, this.cfg.istioOwnedCNIConfigFilename);
      if (this.cfg.chainedCNIPlugin && !ownedFile) {
        // Upstream decides on ISTIO_OWNED_CNI_CONFIG alone and can delete the primary CNI's file
        // when that flag is on without ambient; we only ever delete a file that is ours.
        this.log.info(`removing Istio CNI config from CNI config file: ${file}`);
        const text = await fsp.readFile(file, 'utf8');
        const updated = removeFromConfig(text, this.cfg.pluginType, file);
        if (updated !== undefined) {
          let mode = cniConfFileMode(this.cfg);
          try {
            mode = fs.statSync(file).mode & 0o7777;
          } catch {
            // keep the default
          }
          await atomicWrite(file, updated, mode);
        }
      } else {
        this.log.info(`removing Istio CNI config file: ${file}`);
        await fsp.rm(file);
      }
    }
    if (this.kubeconfigFilepath !== '' && exists(this.kubeconfigFilepath)) {
      this.log.info(`removing Istio CNI kubeconfig file: ${this.kubeconfigFilepath}`);
      await fsp.rm(this.kubeconfigFilepath);
    }
    for (const dir of this.cfg.cniBinTargetDirs) {
      const bin = path.join(dir, this.cfg.pluginType);
      if (exists(bin)) {
        this.log.info(`removing binary: ${bin}`);
        await fsp.rm(bin);
      }
    }
    await removePayloadDirs(this.cfg.cniBinSourceDir, this.cfg.cniBinTargetDirs, this.log);
  }
}

export interface OnceResult {
  cniConfigFile: string;
  kubeconfigFile: string;
  binaries: string[];
}

/**
 * One install pass (payload, kubeconfig, CNI config) and nothing else: for init containers and
 * tests. In chained mode it waits for a primary CNI config until `signal` aborts.
 */
export async function installOnce(cfg: InstallConfig, opts: InstallerOptions & { signal?: AbortSignal } = {}): Promise<OnceResult> {
  const installer = new Installer(cfg, opts);
  const bins = await installer.installAll(opts.signal);
  return {
    cniConfigFile: installer.cniConfigFilepath,
    kubeconfigFile: installer.kubeconfigFilepath,
    binaries: [...bins].sort(),
  };
}
