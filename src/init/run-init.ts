// `istio-cni-ts init`: what the istio-init container does, with nftables: build the capture
// transaction, apply it whole in the pod netns, set up TPROXY routing, optionally validate.
import { SIDECAR_TABLE_REFS, applySidecarCapture, removeSidecarCapture } from '../capture/apply';
import { buildCapture } from '../capture/build';
import { CaptureConfig } from '../capture/config';
import { isDualStack } from '../netns/dualstack';
import { NetnsHandle } from '../netns/handle';
import { DataplanePort, addonDataplane } from '../netns/port';
import { render } from '../nft/transaction';
import { VALIDATION_FAILED_EXIT, validateRedirection } from './validation';

export interface InitOptions {
  /** The pod netns; undefined means the current one. */
  readonly netnsPath?: string;
  /** Remove our tables and routes instead of applying. */
  readonly cleanup: boolean;
  /** `--ipv6` given explicitly: overrides the dual-stack detection. */
  readonly ipv6Override?: boolean;
}

export interface InitIo {
  readonly out: (text: string) => void;
  readonly log: (line: string) => void;
}

const CURRENT_NETNS = '/proc/self/ns/net';

/** Returns the process exit code. */
export async function runInit(cfg: CaptureConfig, opts: InitOptions, io: InitIo, port: DataplanePort = addonDataplane(SIDECAR_TABLE_REFS)): Promise<number> {
  const nsPath = opts.netnsPath ?? CURRENT_NETNS;
  const tproxyTable = { mark: cfg.inboundTProxyMark, table: cfg.inboundTProxyRouteTable };

  if (opts.cleanup || cfg.cleanupOnly) {
    if (cfg.dryRun) {
      io.out(render(buildCapture({ ...cfg, cleanupOnly: true })));
      return 0;
    }
    await withNetns(nsPath, (ns) => removeSidecarCapture(port, ns, tproxyTable));
    io.log(`removed istio-proxy tables and TPROXY routes from ${nsPath}`);
    return 0;
  }

  if (cfg.dryRun) {
    const ipv6 = opts.ipv6Override ?? cfg.enableIPv6;
    io.out(render(buildCapture({ ...cfg, enableIPv6: ipv6 })));
    return 0;
  }
  if (!cfg.skipRuleApply) {
    await withNetns(nsPath, async (ns) => {
      // IPv6 rules only for a dual-stack pod (unless --ipv6 says otherwise); our own netns is
      // read without entering it.
      const ipv6 = opts.ipv6Override ?? (await isDualStack(opts.netnsPath === undefined ? undefined : ns.path));
      // As the plugin does: all three sidecar tables replaced, then the routes; the rules go
      // again if the routes fail.
      const tx = await applySidecarCapture(port, ns, { ...cfg, enableIPv6: ipv6 });
      io.log(`applied ${tx.length} nft operations in ${nsPath} (IPv6 rules: ${ipv6 ? 'yes' : 'no'})`);
    });
  }
  if (cfg.runValidation) {
    const result = await validateRedirection({
      ipv6: false,
      listenPorts: [cfg.proxyPort, cfg.inboundCapturePort],
      probePort: cfg.iptablesProbePort,
      timeoutMs: Math.max(1, Math.round(cfg.probeTimeoutNs / 1e6)),
    });
    if (!result.ok) {
      io.log(`validation failed: ${result.reason}`);
      return VALIDATION_FAILED_EXIT;
    }
    io.log('validation passed: traffic is redirected');
  }
  return 0;
}

/** Opens the netns once for everything init does there, and closes it. */
async function withNetns<T>(nsPath: string, fn: (ns: NetnsHandle) => Promise<T>): Promise<T> {
  const ns = NetnsHandle.openForRequest(nsPath);
  try {
    return await fn(ns);
  } finally {
    ns.release();
  }
}
