// "Apply sidecar capture, set up its routes, roll back" written once, for the plugin's ADD, `init`
// and the repair controller: the rules in one transaction, then the routes they need; if the
// routes fail the rules go again, since TPROXY rules without their routes black-hole inbound
// traffic.
import type { NetnsRef } from '../netns/handle';
import type { DataplanePort } from '../netns/port';
import { TableRef, Transaction, tablesOf } from '../nft/transaction';
import { routePlanFor } from '../redirect/capture';
import { buildCapture } from './build';
import { CaptureConfig, parseCaptureConfig } from './config';
import { SIDECAR_TABLES } from './tables';

/** The three sidecar tables, as a port replaces and removes them. */
export const SIDECAR_TABLE_REFS: readonly TableRef[] = SIDECAR_TABLES.map((t) => ({ family: t.family, table: t.name }));

let defaults: { mark: number; table: number } | undefined;

/**
 * The TPROXY mark and route table when nothing overrides them (the capture flags' defaults,
 * 1337 and 133): what the CNI path always uses, and what its DEL removes.
 */
export function defaultTproxyRouting(): { mark: number; table: number } {
  if (!defaults) {
    const d = parseCaptureConfig({});
    defaults = { mark: d.inboundTProxyMark, table: d.inboundTProxyRouteTable };
  }
  return defaults;
}

/** Which step failed: the rules (nothing changed) or the routes (the rules were removed again). */
export class CaptureApplyError extends Error {
  override readonly name = 'CaptureApplyError';
  constructor(
    readonly stage: 'rules' | 'routes',
    /** What the port threw. */
    readonly error: unknown,
  ) {
    super(error instanceof Error ? error.message : String(error));
  }
}

/** Applies the capture `config` builds in the netns `ns`; resolves to the transaction it built. */
export async function applySidecarCapture(port: DataplanePort, ns: NetnsRef, config: CaptureConfig): Promise<Transaction> {
  const tx = buildCapture(config);
  try {
    await port.apply(ns, tx);
  } catch (e) {
    throw new CaptureApplyError('rules', e);
  }
  const routes = routePlanFor(config);
  if (routes) {
    try {
      await port.setupRoutes(ns, routes);
    } catch (e) {
      await port.remove(ns, tablesOf(tx)).catch(() => undefined);
      throw new CaptureApplyError('routes', e);
    }
  }
  return tx;
}

/** Removes the sidecar tables and the TPROXY rule and routes; what is absent is no error. */
export async function removeSidecarCapture(port: DataplanePort, ns: NetnsRef, tproxy = defaultTproxyRouting()): Promise<void> {
  await port.remove(ns, SIDECAR_TABLE_REFS);
  await port.removeRoutes(ns, { kind: 'sidecar', ...tproxy });
}
