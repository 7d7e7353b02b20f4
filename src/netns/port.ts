// The dataplane port: every effect the sidecar path has on a pod netns, as one interface, so the
// plugin, `init` and repair share one way to apply (applySidecarCapture) and unit tests run them
// over a fake (FakeDataplane, over the nft fake). addonDataplane is the one real implementation.
import { TableRef, Transaction } from '../nft/transaction';
import type { RoutePlan } from '../redirect/capture';

export interface DataplanePort {
  /**
   * Makes the owned tables exactly what `tx` builds, in one atomic nft transaction: an owned
   * table `tx` does not build goes, and only what is stale is deleted (src/nft/plan.ts).
   */
  apply(netnsPath: string, tx: Transaction): Promise<void>;
  /** Deletes the tables; tables that do not exist are not an error. */
  remove(netnsPath: string, tables: readonly TableRef[]): Promise<void>;
  /** The tables present in the netns. */
  listTables(netnsPath: string): Promise<TableRef[]>;
  /** Routes and addresses the rules rely on (TPROXY policy routing, ::6 on lo). */
  setupRoutes(netnsPath: string, plan: RoutePlan): Promise<void>;
  /** Removes the TPROXY rule and routes for this mark and table; absent ones are not an error. */
  removeRoutes(netnsPath: string, tproxy: { mark: number; table: number }): Promise<void>;
}

// Loaded on first use only: unit tests and dry runs never load the addon or netlink.
const nftModule = () => import('./nft');
const routesModule = () => import('./tproxy-routes');

/** The port over the native addon (nft) and rtnetlink; every apply replaces all of `owned`. */
export function addonDataplane(owned: readonly TableRef[]): DataplanePort {
  return {
    async apply(p, tx) {
      await (await nftModule()).applyTransaction(p, tx, { replace: owned });
    },
    async remove(p, tables) {
      await (await nftModule()).deleteTables(p, tables);
    },
    async listTables(p) {
      return (await (await nftModule()).listNftState(p)).map((t) => ({ family: t.family, table: t.table }));
    },
    setupRoutes: async (p, plan) =>
      (await routesModule()).configureRoutesIn(p, {
        tproxy: plan.tproxy !== undefined,
        // Unused without TPROXY (then only ::6 on lo is set up).
        mark: plan.tproxy?.mark ?? 0,
        table: plan.tproxy?.table ?? 0,
        ipv6: plan.loopbackV6,
      }),
    removeRoutes: async (p, tproxy) => (await routesModule()).removeRoutesIn(p, tproxy),
  };
}
