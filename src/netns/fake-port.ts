// A fake of the dataplane port for unit tests (the plugin handler, applySidecarCapture, repair,
// ambient enrollment and host probe sets), and a stand-in for the netns handle it is keyed by.
import { SetElement } from '../nft/json';
import { FakeNft } from '../nft/fake';
import { planRemove, planReplace } from '../nft/plan';
import { TableRef, Transaction, render } from '../nft/transaction';
import type { NetnsRef } from './handle';
import { DataplanePort } from './port';
import type { RoutePlan, RouteRemoval } from './route-plan';

const inodes = new Map<string, bigint>();

/**
 * A NetnsHandle stand-in without a descriptor: the same source path gives the same identity, as
 * opening the same netns twice would. Counts its references, so tests can see a handle left open.
 */
export class FakeNetns implements NetnsRef {
  refs = 1;
  readonly ino: bigint;
  constructor(readonly source: string) {
    if (!inodes.has(source)) inodes.set(source, BigInt(4026532000 + inodes.size));
    this.ino = inodes.get(source)!;
  }
  get path(): string {
    return `/fake-netns${this.source}`;
  }
  release(): void {
    if (this.refs > 0) this.refs--;
  }
}

/**
 * The dataplane port over FakeNft, one fake netns per handle source (the path it was opened
 * from), planning as the real port does (list, then the desired transaction plus deletes of what
 * is stale) and sending the rendered text, which the fake parses: a stale table or chain stays
 * visible in its state. Records what it was asked and sent, by source; fail* make calls reject.
 */
export class FakeDataplane implements DataplanePort {
  readonly nft = new Map<string, FakeNft>();
  readonly applied: { netns: string; tx: Transaction; sent: string }[] = [];
  readonly updated: { netns: string; sent: string }[] = [];
  readonly removed: { netns: string; tables: readonly TableRef[] }[] = [];
  readonly routes: { netns: string; plan: RoutePlan }[] = [];
  readonly routesRemoved: { netns: string; routes: RouteRemoval }[] = [];
  failApply?: Error;
  failUpdate?: Error;
  failRoutes?: Error;
  failRemove?: Error;

  constructor(readonly owned: readonly TableRef[] = []) {}

  /** The fake nft of the netns `source` names (created empty on first use). */
  at(source: string): FakeNft {
    if (!this.nft.has(source)) this.nft.set(source, new FakeNft());
    return this.nft.get(source)!;
  }

  async apply(ns: NetnsRef, tx: Transaction): Promise<void> {
    if (this.failApply) throw this.failApply;
    const nft = this.at(ns.source);
    const sent = render(planReplace(tx, this.owned, nft.tables()));
    nft.runScript(sent);
    this.applied.push({ netns: ns.source, tx, sent });
  }

  async update(ns: NetnsRef, tx: Transaction): Promise<void> {
    if (this.failUpdate) throw this.failUpdate;
    const sent = render(tx);
    this.at(ns.source).runScript(sent);
    this.updated.push({ netns: ns.source, sent });
  }

  async remove(ns: NetnsRef, tables: readonly TableRef[]): Promise<void> {
    if (this.failRemove) throw this.failRemove;
    this.removed.push({ netns: ns.source, tables });
    const nft = this.at(ns.source);
    nft.runScript(render(planRemove(tables, nft.tables())));
  }

  async listTables(ns: NetnsRef): Promise<TableRef[]> {
    return this.at(ns.source)
      .tables()
      .map((t) => ({ family: t.family, table: t.table }));
  }

  async listSets(ns: NetnsRef, table: TableRef): Promise<Map<string, SetElement[]>> {
    return this.at(ns.source).sets(table.family, table.table);
  }

  async setupRoutes(ns: NetnsRef, plan: RoutePlan): Promise<void> {
    if (this.failRoutes) throw this.failRoutes;
    this.routes.push({ netns: ns.source, plan });
  }

  async removeRoutes(ns: NetnsRef, routes: RouteRemoval): Promise<void> {
    this.routesRemoved.push({ netns: ns.source, routes });
  }
}
