// Ambient mode rules as nft Transactions: the in-pod redirection to ztunnel (applied inside the
// pod's netns) and the host rule that SNATs kubelet's probes (applied in the host netns). Rule
// order and text follow Istio's cni/pkg/nftables so the output equals its goldens byte for byte.
import { AssemblyPolicy, assembleTable, deleteTables } from '../nft/assemble';
import { RuleBuilder } from '../nft/rule-builder';
import { Op, Transaction } from '../nft/transaction';
import { AmbientConfig, AmbientRulesInput, HostRuleParams, PodOverrides } from './config';
import { createProbeSets } from './probe-sets';
import { Chain, HOST_TABLE, INPOD_MARK, INPOD_MASK, INPOD_TPROXY_MARK, INPOD_TPROXY_MASK, MANGLE, NAT, POD_TABLES, Ports, RAW, hex } from './tables';

const COUNTER = 'counter';
const LOOPBACK_V4 = '127.0.0.1/32';
const LOOPBACK_V6 = '::1/128';

/** Chains that are only jumped to are still written; an insert stays one unless the chain is empty. */
const AMBIENT_POLICY: AssemblyPolicy = { chains: 'with-rules-or-jump-targets', insertAsAppend: 'empty-chain' };

/** DNS capture for this pod: its own choice when it made one, otherwise the node's. */
export function effectiveRedirectDNS(cfg: AmbientConfig, pod: PodOverrides): boolean {
  switch (pod.dnsProxy) {
    case 'PodDNSEnabled':
      return true;
    case 'PodDNSDisabled':
      return false;
    case 'PodDNSUnset':
      return cfg.redirectDNS;
  }
}

/**
 * The in-pod transaction: each of istio-ambient-nat, -mangle and -raw that gets rules is added,
 * flushed and refilled, so running it again leaves the same state. IPv6 rules only with
 * cfg.enableIPv6. The ip rule and local route the marks rely on are set up separately
 * (src/netns/ambient-routes.ts).
 */
export function buildInpodRules(cfg: AmbientConfig, pod: PodOverrides): Transaction {
  const rb = collectInpodRules(cfg, pod);
  return POD_TABLES.flatMap((t) => assembleTable(t, rb.rules(t.name), AMBIENT_POLICY));
}

function collectInpodRules(cfg: AmbientConfig, pod: PodOverrides): RuleBuilder {
  const rb = new RuleBuilder(cfg.enableIPv6);
  const dns = effectiveRedirectDNS(cfg, pod);
  const snat4 = cfg.hostProbeSNATAddress.text;
  const snat6 = cfg.hostProbeV6SNATAddress.text;
  const mark = hex(INPOD_MARK);
  const mask = hex(INPOD_MASK);
  const connMark = hex(INPOD_TPROXY_MARK);
  const connMask = hex(INPOD_TPROXY_MASK);
  const to = (port: number) => `:${port}`;

  // Hook each base chain to its istio-* chain (no counters on these jumps). Raw is only needed
  // for the DNS conntrack zones.
  rb.append(MANGLE, Chain.prerouting, 'jump', Chain.istioPrerouting);
  rb.append(MANGLE, Chain.output, 'jump', Chain.istioOutput);
  rb.append(NAT, Chain.output, 'jump', Chain.istioOutput);
  if (dns) {
    rb.append(RAW, Chain.prerouting, 'jump', Chain.istioPrerouting);
    rb.append(RAW, Chain.output, 'jump', Chain.istioOutput);
  }
  rb.append(NAT, Chain.prerouting, 'jump', Chain.istioPrerouting);

  // Virtual interfaces first: TCP arriving on them is the pod's own outbound traffic (a VM or
  // nested container behind the pod), so it goes to ztunnel's outbound port and stops there.
  // UDP is left alone.
  for (const vif of pod.virtualInterfaces) {
    rb.append(NAT, Chain.istioPrerouting, 'iifname', vif, 'meta l4proto tcp', COUNTER, 'redirect to', to(Ports.outbound));
    rb.append(NAT, Chain.istioPrerouting, 'iifname', vif, 'meta l4proto tcp', COUNTER, 'return');
  }

  // Packets ztunnel sends carry its mark; remember that on the connection so replies are routed
  // back to ztunnel through the ip rule. Kept in ingress mode too. (The token ends in a space,
  // as Istio's does, hence the double space before the mark in the golden text.)
  rb.append(MANGLE, Chain.istioPrerouting, `meta mark & ${mask} ==`, mark, COUNTER, 'ct mark set ct mark & 0xfffff000 | ', connMark);

  // Kubelet probes arrive SNATed to the node's probe address: not captured.
  if (!pod.ingressMode) {
    rb.append(NAT, Chain.istioPrerouting, 'meta l4proto tcp', 'ip saddr', snat4, COUNTER, 'accept');
    rb.appendV6(NAT, Chain.istioPrerouting, 'meta l4proto tcp', 'ip6 saddr', snat6, COUNTER, 'accept');
  }
  // And their replies go straight back.
  rb.append(NAT, Chain.istioOutput, 'meta l4proto tcp', 'ip daddr', snat4, COUNTER, 'accept');
  rb.appendV6(NAT, Chain.istioOutput, 'meta l4proto tcp', 'ip6 daddr', snat6, COUNTER, 'accept');

  // Inbound: everything not for loopback, not HBONE and not from ztunnel goes to the plaintext
  // port. Istio's IPv4 rule has a trailing space in one token; reproduced for byte equality.
  if (!pod.ingressMode) {
    rb.append(
      NAT,
      Chain.istioPrerouting,
      'ip daddr',
      '!=',
      LOOPBACK_V4,
      'tcp dport',
      '!=',
      String(Ports.hbone),
      `mark and ${mask} `,
      '!=',
      mark,
      COUNTER,
      'redirect to',
      to(Ports.inboundPlaintext),
    );
    rb.appendV6(
      NAT,
      Chain.istioPrerouting,
      'ip6 daddr',
      '!=',
      LOOPBACK_V6,
      'tcp dport',
      '!=',
      String(Ports.hbone),
      `mark and ${mask}`,
      '!=',
      mark,
      COUNTER,
      'redirect to',
      to(Ports.inboundPlaintext),
    );
  }

  // Outbound packets of a connection ztunnel accepted get its mark back from the connection.
  rb.append(MANGLE, Chain.istioOutput, 'ct mark and', connMask, '==', connMark, COUNTER, 'meta mark set ct mark');

  if (dns) {
    // Queries not sent over lo and not from ztunnel go to its DNS proxy: UDP for any family...
    rb.append(NAT, Chain.istioOutput, 'oifname', '!=', 'lo', 'mark and', mask, '!=', mark, 'udp dport', '53', COUNTER, 'redirect to', to(Ports.dns));
    // ...TCP per family, except to loopback.
    rb.append(NAT, Chain.istioOutput, 'ip daddr', '!=', LOOPBACK_V4, 'tcp dport', '53', 'mark and', mask, '!=', mark, COUNTER, 'redirect to', to(Ports.dns));
    rb.appendV6(NAT, Chain.istioOutput, 'ip6 daddr', '!=', LOOPBACK_V6, 'tcp dport', '53', 'mark and', mask, '!=', mark, COUNTER, 'redirect to', to(Ports.dns));
    // ztunnel's own queries upstream, and their answers, live in conntrack zone 1 so they cannot
    // collide with the app's queries to ztunnel.
    rb.append(RAW, Chain.istioOutput, 'udp dport', '53', 'meta mark and', mask, '==', mark, COUNTER, 'ct zone set', '1');
    rb.append(RAW, Chain.istioPrerouting, 'udp sport', '53', 'meta mark and', mask, '!=', mark, COUNTER, 'ct zone set', '1');
  }

  // Replies on connections ztunnel accepted leave as they are.
  rb.append(NAT, Chain.istioOutput, 'meta l4proto tcp', 'mark and', connMask, '==', connMark, COUNTER, 'accept');
  // The app calling itself on its pod address (over lo) is not sent through ztunnel.
  rb.append(NAT, Chain.istioOutput, 'oifname', 'lo', 'ip daddr', '!=', LOOPBACK_V4, COUNTER, 'accept');
  rb.appendV6(NAT, Chain.istioOutput, 'oifname', 'lo', 'ip6 daddr', '!=', LOOPBACK_V6, COUNTER, 'accept');
  // Everything else outbound over TCP, not from ztunnel, goes to ztunnel's outbound port.
  rb.append(
    NAT,
    Chain.istioOutput,
    'meta l4proto tcp',
    'ip daddr',
    '!=',
    LOOPBACK_V4,
    'mark and',
    mask,
    '!=',
    mark,
    COUNTER,
    'redirect to',
    to(Ports.outbound),
  );
  rb.appendV6(
    NAT,
    Chain.istioOutput,
    'meta l4proto tcp',
    'ip6 daddr',
    '!=',
    LOOPBACK_V6,
    'mark and',
    mask,
    '!=',
    mark,
    COUNTER,
    'redirect to',
    to(Ports.outbound),
  );
  return rb;
}

/** Removes the three in-pod tables; absent ones are no error (`add` before `delete`). */
export function deleteInpodRules(): Transaction {
  return deleteTables(POD_TABLES);
}

/**
 * The host transaction: in `inet istio-ambient-nat`, chain postrouting SNATs TCP from kubelet's
 * sockets to a pod in the probe set to the probe address. The sets must exist when it is applied
 * (createProbeSets); `flush table` keeps them and their elements.
 */
export function buildHostRules(cfg: AmbientConfig, host: HostRuleParams): Transaction {
  const rb = new RuleBuilder(cfg.enableIPv6);
  const uid = String(host.kubeletUID);
  rb.append(
    NAT,
    Chain.postrouting,
    'meta l4proto tcp',
    'skuid',
    uid,
    'ip',
    'daddr',
    `@${host.probeIPSetName}-v4`,
    COUNTER,
    'snat',
    'to',
    cfg.hostProbeSNATAddress.text,
  );
  rb.appendV6(
    NAT,
    Chain.postrouting,
    'meta l4proto tcp',
    'skuid',
    uid,
    'ip6',
    'daddr',
    `@${host.probeIPSetName}-v6`,
    COUNTER,
    'snat',
    'to',
    cfg.hostProbeV6SNATAddress.text,
  );
  return assembleTable(HOST_TABLE, rb.rules(NAT), AMBIENT_POLICY);
}

/** Empties the host chain but keeps the table, so the probe sets and their elements survive. */
export function deleteHostRules(): Transaction {
  const where = { family: HOST_TABLE.family, table: HOST_TABLE.name } as const;
  const ops: Op[] = [
    { verb: 'add', kind: 'table', ...where },
    { verb: 'flush', kind: 'table', ...where },
  ];
  return ops;
}

/**
 * What the agent applies at start in the host netns: the probe sets (kept when they exist), then
 * the host rule. One transaction, so the rule never refers to a set that is not there.
 */
export function buildHostSetup(cfg: AmbientConfig, host: HostRuleParams): Transaction {
  return [...createProbeSets({ prefix: host.probeIPSetName, ipv6: cfg.enableIPv6 }), ...buildHostRules(cfg, host)];
}

/** The transaction `rules --dry-run --ambient pod|host` prints. */
export function buildAmbientRules(input: AmbientRulesInput): Transaction {
  return input.ruleSet === 'pod' ? buildInpodRules(input.config, input.overrides) : buildHostRules(input.config, input.host);
}
