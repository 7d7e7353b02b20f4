// A fake of the dataplane port for unit tests (the plugin handler, applySidecarCapture, repair).
import { FakeNft } from '../nft/fake';
import { planRemove, planReplace } from '../nft/plan';
import { TableRef, Transaction, render, tablesOf } from '../nft/transaction';
import type { RoutePlan } from '../redirect/capture';
import { DataplanePort } from './port';

/**
 * The dataplane port over FakeNft, one fake netns per path, planning as the real port does
 * (list, then the desired transaction plus deletes of what is stale) and sending the rendered
 * text, which the fake parses: a stale table or chain stays visible in its state. Records what
 * it was asked and sent; fail* make the next calls reject.
 */
export class FakeDataplane implements DataplanePort {
  readonly nft = new Map<string, FakeNft>();
  readonly applied: { netns: string; tx: Transaction; sent: string }[] = [];
  readonly removed: { netns: string; tables: readonly TableRef[] }[] = [];
  readonly routes: { netns: string; plan: RoutePlan }[] = [];
  readonly routesRemoved: string[] = [];
  failApply?: Error;
  failRoutes?: Error;
  failRemove?: Error;

  private ns(p: string): FakeNft {
    if (!this.nft.has(p)) this.nft.set(p, new FakeNft());
    return this.nft.get(p)!;
  }

  constructor(readonly owned: readonly TableRef[]) {}

  async apply(netns: string, tx: Transaction): Promise<void> {
    if (this.failApply) throw this.failApply;
    const nft = this.ns(netns);
    const sent = render(planReplace(tx, this.owned, nft.tables()));
    nft.runScript(sent);
    this.applied.push({ netns, tx, sent });
  }

  async remove(netns: string, tables: readonly TableRef[]): Promise<void> {
    if (this.failRemove) throw this.failRemove;
    this.removed.push({ netns, tables });
    const nft = this.ns(netns);
    nft.runScript(render(planRemove(tables, nft.tables())));
  }

  async listTables(netns: string): Promise<TableRef[]> {
    return this.ns(netns)
      .tables()
      .map((t) => ({ family: t.family, table: t.table }));
  }

  async setupRoutes(netns: string, plan: RoutePlan): Promise<void> {
    if (this.failRoutes) throw this.failRoutes;
    this.routes.push({ netns, plan });
  }

  async removeRoutes(netns: string): Promise<void> {
    this.routesRemoved.push(netns);
  }

  tablesIn(netns: string): string[] {
    return tablesOf(this.applied.filter((a) => a.netns === netns).flatMap((a) => a.tx)).map((t) => t.table);
  }
}
