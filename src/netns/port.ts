// The dataplane port: every effect on a network namespace, as one interface keyed by a handle
// the caller holds (opened once per request or pod, src/netns/handle.ts), so the plugin, `init`,
// repair and ambient (in-pod and host) share one way to apply, and unit tests run them over a
// fake (FakeDataplane, over the nft fake). addonDataplane is the one real implementation.
import { SetElement, setsOf } from '../nft/json';
import { TableRef, Transaction, render } from '../nft/transaction';
import type { NetnsRef } from './handle';
import type { RoutePlan, RouteRemoval } from './route-plan';

export interface DataplanePort {
  /**
   * Makes the owned tables exactly what `tx` builds, in one atomic nft transaction: an owned
   * table `tx` does not build goes, and only what is stale is deleted (src/nft/plan.ts).
   */
  apply(ns: NetnsRef, tx: Transaction): Promise<void>;
  /**
   * Applies `tx` as it is, in one atomic transaction, replacing nothing: for objects whose state
   * must survive (the host's probe sets and their elements).
   */
  update(ns: NetnsRef, tx: Transaction): Promise<void>;
  /** Deletes the tables; tables that do not exist are not an error. */
  remove(ns: NetnsRef, tables: readonly TableRef[]): Promise<void>;
  /** The tables present in the netns. */
  listTables(ns: NetnsRef): Promise<TableRef[]>;
  /** The sets of `table` with their elements, by set name (none when the table is absent). */
  listSets(ns: NetnsRef, table: TableRef): Promise<Map<string, SetElement[]>>;
  /** Routes and addresses the rules rely on (sidecar TPROXY and ::6 on lo, or ambient's mark routing). */
  setupRoutes(ns: NetnsRef, plan: RoutePlan): Promise<void>;
  /** Removes the rule and routes of that mark and table, both families; absent ones are not an error. */
  removeRoutes(ns: NetnsRef, routes: RouteRemoval): Promise<void>;
}

// Loaded on first use only: unit tests and dry runs never load the addon or netlink.
const nftModule = () => import('./nft');
const tproxyRoutes = () => import('./tproxy-routes');
const ambientRoutes = () => import('./ambient-routes');

/** The port over the native addon (nft) and rtnetlink; every apply replaces all of `owned`. */
export function addonDataplane(owned: readonly TableRef[]): DataplanePort {
  return {
    async apply(ns, tx) {
      await (await nftModule()).applyTransaction(ns, tx, { replace: owned });
    },
    async update(ns, tx) {
      if (tx.length > 0) await (await nftModule()).applyNft(ns, render(tx));
    },
    async remove(ns, tables) {
      await (await nftModule()).deleteTables(ns, tables);
    },
    async listTables(ns) {
      return (await (await nftModule()).listNftState(ns)).map((t) => ({ family: t.family, table: t.table }));
    },
    async listSets(ns, table) {
      const json = await (await nftModule()).listRulesetJson(ns);
      return setsOf(json, table.family, table.table);
    },
    async setupRoutes(ns, plan) {
      if (plan.kind === 'sidecar') await (await tproxyRoutes()).configureRoutesIn(ns.path, plan);
      else await (await ambientRoutes()).configureAmbientRoutesIn(ns.path, plan);
    },
    async removeRoutes(ns, routes) {
      if (routes.kind === 'sidecar') await (await tproxyRoutes()).removeRoutesIn(ns.path, routes);
      else await (await ambientRoutes()).removeAmbientRoutesIn(ns.path, routes);
    },
  };
}
