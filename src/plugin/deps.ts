// Everything the CNI handler needs from the outside world, as small interfaces, so the handler
// is a pure function of (env, stdin, deps) in tests and can run inside the agent. realDeps()
// wires the production implementations.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { K8sArgs } from '../cni/args';
import { PrevResult } from '../cni/netconf';
import { Env } from '../cni/env';
import { HttpsKubeClient, KubeClient } from '../kube/client';
import { KUBECONFIG_NAME, parseKubeconfig } from '../kube/kubeconfig';
import { SIDECAR_TABLES } from '../capture/tables';
import { TableRef, Transaction } from '../nft/transaction';
import { RoutePlan } from '../redirect';
import { LogFields, PluginRunLogger } from '../log/logger';
import { PluginLogger } from '../log/plugin-logger';
import { PluginConfig } from './config';
import { ambientBranch } from './ambient';

export type NetnsState = 'ok' | 'missing' | 'not-netns' | 'own';

export interface PodNetns {
  /** What CNI_NETNS points to: a netns, nothing, something else, or the plugin's own netns. */
  inspect(netnsPath: string): Promise<NetnsState>;
  /** Whether the pod netns has IPv6 addresses besides link-local and loopback: IPv6 rules then. */
  isDualStack(netnsPath: string): Promise<boolean>;
}

export interface RuleApplier {
  /** One atomic nft transaction inside the netns. */
  apply(netnsPath: string, tx: Transaction): Promise<void>;
  /** Deletes the tables; tables that do not exist are not an error. */
  remove(netnsPath: string, tables: readonly TableRef[]): Promise<void>;
  /** The tables present in the netns. Optional: without it CHECK cannot look at the rules. */
  listTables?(netnsPath: string): Promise<TableRef[]>;
  /** Routes and addresses the rules rely on (TPROXY policy routing, ::6 on lo). */
  setupRoutes(netnsPath: string, plan: RoutePlan): Promise<void>;
  /** Removes the TPROXY rule and routes for this mark and table; absent ones are not an error. */
  removeRoutes(netnsPath: string, tproxy: { mark: number; table: number }): Promise<void>;
}

/** The ambient branch (issue 6). Absent in this build: see plugin/istio.ts for what happens then. */
export interface AmbientBranch {
  /** 'handled' ends ADD successfully (the pod was handed to the node agent). */
  add(ctx: {
    conf: PluginConfig;
    args: K8sArgs;
    netns: string;
    prevResult?: PrevResult;
    client: KubeClient;
    /** The run's logger and sleep (PluginDeps'), with the pod's log fields. */
    log?: PluginRunLogger;
    sleep?: (ms: number) => Promise<void>;
    fields?: LogFields;
  }): Promise<'handled' | 'not-ambient'>;
}

export interface PluginDeps {
  /** A client for the API server, from <agentRunDir>/istio-cni-kubeconfig (rejects when unusable). */
  kube(agentRunDir: string): Promise<KubeClient>;
  netns: PodNetns;
  rules: RuleApplier;
  log: PluginRunLogger;
  sleep(ms: number): Promise<void>;
  now(): number;
  /** The plugin process environment (owner groups, loopback CIDR). */
  env: Env;
  ambient?: AmbientBranch;
}

// ---------------------------------------------------------------------------------------------
// Production implementations.

async function statNs(p: string): Promise<fs.BigIntStats | undefined> {
  try {
    return await fs.promises.stat(p, { bigint: true });
  } catch {
    return undefined;
  }
}

// The netns modules are loaded on first use only: unit tests and dry runs never load the addon.
type NftModule = typeof import('../netns/nft');
// src/netns/tproxy-routes.ts and src/netns/dualstack.ts (rtnetlink), as this code expects them.
interface RoutesModule {
  configureRoutesIn(netnsPath: string, r: { tproxy: boolean; mark: number; table: number; ipv6: boolean }): Promise<void>;
  removeRoutesIn(netnsPath: string, r: { mark: number; table: number }): Promise<void>;
}
interface DualStackModule {
  isDualStack(netnsPath: string): Promise<boolean>;
}
/* eslint-disable @typescript-eslint/no-require-imports */
const nftModule = (): NftModule => require('../netns/nft') as NftModule;
const routesModule = (): RoutesModule => require('../netns/tproxy-routes') as RoutesModule;
const dualStackModule = (): DualStackModule => require('../netns/dualstack') as DualStackModule;
/* eslint-enable @typescript-eslint/no-require-imports */

/** Namespace files live on nsfs; comparing with our own netns tells a netns from anything else. */
export const realNetns = (): PodNetns => ({
  async inspect(netnsPath) {
    const [target, own] = await Promise.all([statNs(netnsPath), statNs('/proc/self/ns/net')]);
    if (!target) return 'missing';
    if (!own || target.dev !== own.dev) return 'not-netns';
    return target.ino === own.ino ? 'own' : 'ok';
  },
  isDualStack: (netnsPath) => dualStackModule().isDualStack(netnsPath),
});

/**
 * The three sidecar tables: every apply replaces all of them (deleting only what the netns's
 * listing shows stale), so a table a new config no longer needs goes.
 */
export const realRules = (ownedTables: readonly TableRef[]): RuleApplier => ({
  async apply(p, tx) {
    await nftModule().applyTransaction(p, tx, { replace: ownedTables });
  },
  async remove(p, tables) {
    await nftModule().deleteTables(p, tables);
  },
  async listTables(p) {
    return (await nftModule().listNftState(p)).map((t) => ({ family: t.family, table: t.table }));
  },
  setupRoutes: (p, plan) =>
    routesModule().configureRoutesIn(p, {
      tproxy: plan.tproxy !== undefined,
      mark: plan.tproxy?.mark ?? 1337,
      table: plan.tproxy?.table ?? 133,
      ipv6: plan.loopbackV6,
    }),
  removeRoutes: (p, tproxy) => routesModule().removeRoutesIn(p, tproxy),
});

/** The API client from <agentRunDir>/istio-cni-kubeconfig; its token is handed to `redact` before anything can log it. */
export function realKube(agentRunDir: string, redact: (secret: string | undefined) => void = () => {}): Promise<KubeClient> {
  const file = path.join(agentRunDir, KUBECONFIG_NAME);
  return fs.promises.readFile(file, 'utf8').then(
    (text) => {
      const ep = parseKubeconfig(text, file, (p) => fs.readFileSync(p, 'utf8'));
      redact(ep.token);
      return new HttpsKubeClient(ep);
    },
    (e: NodeJS.ErrnoException) => {
      throw new Error(`kubeconfig ${file}: ${e.code === 'ENOENT' ? 'does not exist (is the istio-cni node agent running?)' : e.message}`);
    },
  );
}

export function realDeps(env: Env = process.env, log: PluginLogger = new PluginLogger()): PluginDeps {
  return {
    kube: (dir) => realKube(dir, (t) => log.redact(t)),
    netns: realNetns(),
    rules: realRules(SIDECAR_TABLES.map((t) => ({ family: t.family, table: t.name }))),
    log,
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    now: () => Date.now(),
    env,
    ambient: ambientBranch(),
  };
}

