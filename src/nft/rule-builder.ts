import { PendingRule } from './assemble';

/**
 * Collects rules per table in generation order, like Istio's NftablesRuleBuilder. The `v6`
 * variants drop the rule unless IPv6 rules were asked for, so IPv4-only pods get no ip6 rules.
 */
export class RuleBuilder {
  private readonly byTable = new Map<string, PendingRule[]>();

  constructor(readonly ipv6: boolean) {}

  append(table: string, chain: string, ...tokens: string[]): void {
    this.push(table, { chain, tokens });
  }

  insert(table: string, chain: string, index: number, ...tokens: string[]): void {
    this.push(table, { chain, tokens, index });
  }

  appendV6(table: string, chain: string, ...tokens: string[]): void {
    if (this.ipv6) this.append(table, chain, ...tokens);
  }

  insertV6(table: string, chain: string, index: number, ...tokens: string[]): void {
    if (this.ipv6) this.insert(table, chain, index, ...tokens);
  }

  rules(table: string): readonly PendingRule[] {
    return this.byTable.get(table) ?? [];
  }

  private push(table: string, rule: PendingRule): void {
    const list = this.byTable.get(table);
    if (list) list.push(rule);
    else this.byTable.set(table, [rule]);
  }
}
