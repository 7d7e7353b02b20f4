// `istio-cni-ts init`: what the istio-init container does, with nftables: build the capture
// transaction, apply it whole in the pod netns, set up TPROXY routing, optionally validate.
import { buildCapture } from '../capture/build';
import { CaptureConfig } from '../capture/config';
import { SIDECAR_TABLES } from '../capture/tables';
import { isDualStack } from '../netns/dualstack';
import { applyTransaction, deleteTables } from '../netns/nft';
import { configureRoutesIn, removeRoutesIn } from '../netns/tproxy-routes';
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
const SIDECAR_TABLE_REFS = SIDECAR_TABLES.map((t) => ({ family: t.family, table: t.name }));

/** Returns the process exit code. */
export async function runInit(cfg: CaptureConfig, opts: InitOptions, io: InitIo): Promise<number> {
  const nsPath = opts.netnsPath ?? CURRENT_NETNS;
  const tproxyTable = { mark: cfg.inboundTProxyMark, table: cfg.inboundTProxyRouteTable };

  if (opts.cleanup || cfg.cleanupOnly) {
    if (cfg.dryRun) {
      io.out(render(buildCapture({ ...cfg, cleanupOnly: true })));
      return 0;
    }
    await deleteTables(nsPath, SIDECAR_TABLE_REFS);
    await removeRoutesIn(opts.netnsPath, tproxyTable);
    io.log(`removed istio-proxy tables and TPROXY routes from ${nsPath}`);
    return 0;
  }

  // IPv6 rules only for a dual-stack pod (unless --ipv6 says otherwise).
  const ipv6 = opts.ipv6Override ?? (cfg.dryRun ? cfg.enableIPv6 : await isDualStack(opts.netnsPath));
  const effective: CaptureConfig = { ...cfg, enableIPv6: ipv6 };
  const tx = buildCapture(effective);

  if (cfg.dryRun) {
    io.out(render(tx));
    return 0;
  }
  if (!cfg.skipRuleApply) {
    // Replace all three sidecar tables, so a table the new config no longer needs goes too.
    await applyTransaction(nsPath, tx, { replace: SIDECAR_TABLE_REFS });
    const inboundCaptured = cfg.inboundPortsInclude === '*' || cfg.inboundPortsInclude.length > 0;
    await configureRoutesIn(opts.netnsPath, {
      ...tproxyTable,
      tproxy: cfg.inboundInterceptionMode === 'TPROXY' && inboundCaptured,
      ipv6,
    });
    io.log(`applied ${tx.length} nft operations in ${nsPath} (IPv6 rules: ${ipv6 ? 'yes' : 'no'})`);
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
