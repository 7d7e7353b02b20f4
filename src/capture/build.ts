// Sidecar (istio-init) capture: CaptureConfig -> nft Transaction, reproducing the rule order of
// Istio's istio-nftables capture so the output equals its goldens byte for byte.
import { AssemblyPolicy, assembleTable, deleteTables } from '../nft/assemble';
import { RuleBuilder } from '../nft/rule-builder';
import { Transaction } from '../nft/transaction';
import { isLoopback } from '../net/ip';
import { Cidr } from '../values/typed';
import { CaptureConfig } from './config';
import { Chain, MANGLE, NAT, RAW, SIDECAR_TABLES } from './tables';

/** Mark the proxy's outbound packets to the pod's own IP get in TPROXY mode. */
export const OUTBOUND_MARK = '1338';
/** Where istio-agent's DNS proxy listens. */
export const DNS_PROXY_PORT = '15053';
const PASSTHROUGH_V4 = '127.0.0.6/32';
const PASSTHROUGH_V6 = '::6/128';
const LOOPBACK_V6 = '::1/128';
const COUNTER = 'counter';

const SIDECAR_POLICY: AssemblyPolicy = { chains: 'with-rules', insertAsAppend: 'empty-or-past-end' };

export function buildCapture(cfg: CaptureConfig): Transaction {
  if (cfg.cleanupOnly) return deleteTables(SIDECAR_TABLES);
  const rb = collectCaptureRules(cfg);
  return SIDECAR_TABLES.flatMap((t) => assembleTable(t, rb.rules(t.name), SIDECAR_POLICY));
}

/** DNS capture needs somewhere to send queries: without servers or capture-all it is off. */
export function effectiveRedirectDNS(cfg: CaptureConfig): boolean {
  return cfg.redirectDNS && (cfg.captureAllDNS || cfg.dnsServersV4.length > 0 || cfg.dnsServersV6.length > 0);
}

function split(ranges: '*' | Cidr[]): { v4: string[]; v6: string[]; wildcard: boolean; loopback: boolean } {
  if (ranges === '*') return { v4: [], v6: [], wildcard: true, loopback: false };
  return {
    v4: ranges.filter((c) => c.prefix.addr.family === 4).map((c) => c.text),
    v6: ranges.filter((c) => c.prefix.addr.family === 6).map((c) => c.text),
    wildcard: false,
    loopback: ranges.some((c) => isLoopback(c.prefix.addr)),
  };
}

function collectCaptureRules(cfg: CaptureConfig): RuleBuilder {
  const rb = new RuleBuilder(cfg.enableIPv6);
  const tproxy = cfg.inboundInterceptionMode === 'TPROXY';
  const exclude = split(cfg.outboundIPRangesExclude);
  const include = split(cfg.outboundIPRangesInclude);
  const redirectDNS = effectiveRedirectDNS(cfg);
  const L = cfg.hostIPv4LoopbackCidr.text;
  const tunnel = String(cfg.inboundTunnelPort);
  const mark = String(cfg.inboundTProxyMark);
  const uids = cfg.proxyUIDs.map(String);
  const gids = cfg.proxyGIDs.map(String);

  // Interfaces that are never captured, then virtual interfaces that skip inbound handling.
  for (const nic of cfg.excludeInterfaces) {
    rb.append(NAT, Chain.prerouting, 'iifname', nic, COUNTER, 'return');
    rb.append(NAT, Chain.output, 'oifname', nic, COUNTER, 'return');
  }
  if (tproxy) {
    for (const nic of cfg.excludeInterfaces) {
      rb.append(MANGLE, Chain.prerouting, 'iifname', nic, COUNTER, 'return');
      rb.append(MANGLE, Chain.output, 'oifname', nic, COUNTER, 'return');
    }
  }
  for (const vif of cfg.rerouteVirtualInterfaces) {
    rb.insert(NAT, Chain.prerouting, 0, 'iifname', vif, COUNTER, 'return');
  }

  if (cfg.dropInvalid) {
    rb.append(MANGLE, Chain.prerouting, 'meta l4proto tcp', 'ct state', 'invalid', COUNTER, 'jump', Chain.drop);
    rb.append(MANGLE, Chain.drop, COUNTER, 'drop');
  }

  rb.append(NAT, Chain.inbound, 'meta l4proto tcp', 'tcp dport', tunnel, COUNTER, 'return');
  rb.append(NAT, Chain.redirect, 'meta l4proto tcp', COUNTER, 'redirect to', `:${cfg.proxyPort}`);
  rb.append(NAT, Chain.inRedirect, 'meta l4proto tcp', COUNTER, 'redirect to', `:${cfg.inboundCapturePort}`);

  addInbound(rb, cfg, L);

  rb.append(NAT, Chain.output, COUNTER, 'jump', Chain.istioOutput);
  for (const p of cfg.outboundPortsExclude) {
    rb.append(NAT, Chain.istioOutput, 'tcp dport', String(p), COUNTER, 'return');
    rb.append(NAT, Chain.istioOutput, 'udp dport', String(p), COUNTER, 'return');
  }
  // Inbound passthrough connections are made from 127.0.0.6 / ::6.
  rb.append(NAT, Chain.istioOutput, 'oifname', 'lo', 'ip saddr', PASSTHROUGH_V4, COUNTER, 'return');
  rb.appendV6(NAT, Chain.istioOutput, 'oifname', 'lo', 'ip6 saddr', PASSTHROUGH_V6, COUNTER, 'return');

  // The proxy's own traffic: back to itself over lo goes inbound; everything else is left alone.
  const loopbackIncluded = include.loopback;
  const addOwner = (match: 'skuid' | 'skgid', id: string, skipDnsPort: boolean) => {
    const dport = skipDnsPort ? `{ 53, ${tunnel} }` : tunnel;
    rb.append(
      NAT,
      Chain.istioOutput,
      'oifname',
      'lo',
      'meta l4proto tcp',
      'ip daddr',
      '!=',
      L,
      'tcp dport',
      '!=',
      dport,
      match,
      id,
      COUNTER,
      'jump',
      Chain.inRedirect,
    );
    rb.appendV6(
      NAT,
      Chain.istioOutput,
      'oifname',
      'lo',
      'meta l4proto tcp',
      'ip6 daddr',
      '!=',
      LOOPBACK_V6,
      'tcp dport',
      '!=',
      dport,
      match,
      id,
      COUNTER,
      'jump',
      Chain.inRedirect,
    );
    if (!loopbackIncluded) {
      if (redirectDNS) {
        rb.append(NAT, Chain.istioOutput, 'oifname', 'lo', 'meta l4proto tcp', 'tcp dport', '!=', '53', match, '!=', id, COUNTER, 'return');
      } else {
        rb.append(NAT, Chain.istioOutput, 'oifname', 'lo', match, '!=', id, COUNTER, 'return');
      }
    }
    rb.append(NAT, Chain.istioOutput, match, id, COUNTER, 'return');
  };
  for (const uid of uids) addOwner('skuid', uid, redirectDNS);
  // Istio never skips port 53 in the GID variant of the first rule.
  for (const gid of gids) addOwner('skgid', gid, false);

  if (cfg.ownerGroupsInclude === '*') {
    for (const g of cfg.ownerGroupsExclude) rb.append(NAT, Chain.istioOutput, 'skgid', g, COUNTER, 'return');
  } else {
    const noneOf = cfg.ownerGroupsInclude.flatMap((g) => ['skgid', '!=', g]);
    rb.append(NAT, Chain.istioOutput, ...noneOf, COUNTER, 'return');
  }

  if (redirectDNS) addDnsRedirect(rb, cfg, uids, gids);

  rb.append(NAT, Chain.istioOutput, 'ip daddr', L, COUNTER, 'return');
  rb.appendV6(NAT, Chain.istioOutput, 'ip6 daddr', LOOPBACK_V6, COUNTER, 'return');
  for (const c of exclude.v4) rb.append(NAT, Chain.istioOutput, 'ip daddr', c, COUNTER, 'return');
  for (const c of exclude.v6) rb.appendV6(NAT, Chain.istioOutput, 'ip6 daddr', c, COUNTER, 'return');
  for (const p of cfg.outboundPortsInclude) {
    rb.append(NAT, Chain.istioOutput, 'tcp dport', String(p), COUNTER, 'jump', Chain.redirect);
  }

  if (include.wildcard) {
    rb.append(NAT, Chain.istioOutput, COUNTER, 'jump', Chain.redirect);
    for (const vif of cfg.rerouteVirtualInterfaces) {
      rb.insert(NAT, Chain.prerouting, 0, 'iifname', vif, COUNTER, 'jump', Chain.redirect);
    }
  } else {
    for (const c of include.v4) {
      for (const vif of cfg.rerouteVirtualInterfaces) {
        rb.insert(NAT, Chain.prerouting, 0, 'iifname', vif, 'ip daddr', c, COUNTER, 'jump', Chain.redirect);
      }
      rb.append(NAT, Chain.istioOutput, 'ip daddr', c, COUNTER, 'jump', Chain.redirect);
    }
    for (const c of include.v6) {
      for (const vif of cfg.rerouteVirtualInterfaces) {
        rb.insertV6(NAT, Chain.prerouting, 0, 'iifname', vif, 'ip6 daddr', c, COUNTER, 'jump', Chain.redirect);
      }
      rb.appendV6(NAT, Chain.istioOutput, 'ip6 daddr', c, COUNTER, 'jump', Chain.redirect);
    }
  }

  if (tproxy) addTproxyMarks(rb, L, uids, gids, mark);
  return rb;
}

function addInbound(rb: RuleBuilder, cfg: CaptureConfig, L: string): void {
  const ports = cfg.inboundPortsInclude;
  if (ports !== '*' && ports.length === 0) return; // empty: no inbound capture
  const tproxy = cfg.inboundInterceptionMode === 'TPROXY';
  const mark = String(cfg.inboundTProxyMark);
  const capture = `:${cfg.inboundCapturePort}`;
  if (tproxy) {
    rb.append(MANGLE, Chain.divert, COUNTER, 'meta mark set', mark);
    rb.append(MANGLE, Chain.divert, COUNTER, 'accept');
    rb.append(MANGLE, Chain.tproxy, 'meta l4proto tcp', 'ip daddr', '!=', L, 'tproxy ip to', capture, 'meta mark set', mark, COUNTER, 'accept');
    rb.appendV6(MANGLE, Chain.tproxy, 'meta l4proto tcp', 'ip6 daddr', '!=', LOOPBACK_V6, 'tproxy ip6 to', capture, 'meta mark set', mark, COUNTER, 'accept');
  }
  const table = tproxy ? MANGLE : NAT;
  rb.append(table, Chain.prerouting, 'meta l4proto tcp', COUNTER, 'jump', Chain.inbound);
  if (ports === '*') {
    for (const p of cfg.inboundPortsExclude) {
      rb.append(table, Chain.inbound, 'meta l4proto tcp', 'tcp dport', String(p), COUNTER, 'return');
    }
    if (tproxy) {
      rb.append(MANGLE, Chain.inbound, 'meta l4proto tcp', 'ct state', 'related,established', COUNTER, 'jump', Chain.divert);
      rb.append(MANGLE, Chain.inbound, 'meta l4proto tcp', COUNTER, 'jump', Chain.tproxy);
    } else {
      rb.append(NAT, Chain.inbound, 'meta l4proto tcp', COUNTER, 'jump', Chain.inRedirect);
    }
    return;
  }
  for (const p of ports) {
    const port = String(p);
    if (tproxy) {
      rb.append(MANGLE, Chain.inbound, 'meta l4proto tcp', 'ct state', 'related,established', 'tcp dport', port, COUNTER, 'jump', Chain.divert);
      rb.append(MANGLE, Chain.inbound, 'meta l4proto tcp', 'tcp dport', port, COUNTER, 'jump', Chain.tproxy);
    } else {
      rb.append(NAT, Chain.inbound, 'meta l4proto tcp', 'tcp dport', port, COUNTER, 'jump', Chain.inRedirect);
    }
  }
}

function addDnsRedirect(rb: RuleBuilder, cfg: CaptureConfig, uids: string[], gids: string[]): void {
  const to = `:${DNS_PROXY_PORT}`;
  const v4 = cfg.dnsServersV4.map((s) => `${s.text}/32`);
  const v6 = cfg.dnsServersV6.map((s) => `${s.text}/128`);
  rb.append(RAW, Chain.output, COUNTER, 'jump', Chain.outputDns);
  rb.append(NAT, Chain.istioOutput, COUNTER, 'jump', Chain.outputDns);

  if (cfg.captureAllDNS) {
    rb.append(NAT, Chain.outputDns, 'meta l4proto tcp', 'tcp dport', '53', COUNTER, 'redirect', 'to', to);
    rb.append(NAT, Chain.outputDns, 'udp dport', '53', COUNTER, 'redirect', 'to', to);
  } else {
    for (const proto of ['tcp', 'udp']) {
      for (const s of v4) rb.append(NAT, Chain.outputDns, 'ip daddr', s, `${proto} dport`, '53', COUNTER, 'redirect', 'to', to);
      for (const s of v6) rb.appendV6(NAT, Chain.outputDns, 'ip6 daddr', s, `${proto} dport`, '53', COUNTER, 'redirect', 'to', to);
    }
  }

  // Conntrack zones keep proxy<->upstream (1) and app<->proxy (2) DNS flows apart.
  for (const [match, ids] of [
    ['skuid', uids],
    ['skgid', gids],
  ] as const) {
    for (const id of ids) {
      rb.append(RAW, Chain.outputDns, 'udp dport', '53', 'meta', match, id, COUNTER, 'ct', 'zone', 'set', '1');
      rb.append(RAW, Chain.outputDns, 'udp sport', DNS_PROXY_PORT, 'meta', match, id, COUNTER, 'ct', 'zone', 'set', '2');
    }
  }
  if (cfg.captureAllDNS) {
    rb.append(RAW, Chain.prerouting, COUNTER, 'jump', Chain.inbound);
    rb.append(RAW, Chain.outputDns, 'udp dport', '53', COUNTER, 'ct', 'zone', 'set', '2');
    rb.append(RAW, Chain.inbound, 'udp sport', '53', COUNTER, 'ct', 'zone', 'set', '1');
    return;
  }
  rb.append(RAW, Chain.prerouting, COUNTER, 'jump', Chain.inbound);
  for (const s of v4) {
    rb.append(RAW, Chain.outputDns, 'udp dport', '53', 'ip daddr', s, COUNTER, 'ct', 'zone', 'set', '2');
    rb.append(RAW, Chain.inbound, 'udp sport', '53', 'ip saddr', s, COUNTER, 'ct', 'zone', 'set', '1');
  }
  for (const s of v6) {
    rb.appendV6(RAW, Chain.outputDns, 'udp dport', '53', 'ip6 daddr', s, COUNTER, 'ct', 'zone', 'set', '2');
    rb.appendV6(RAW, Chain.inbound, 'udp sport', '53', 'ip6 saddr', s, COUNTER, 'ct', 'zone', 'set', '1');
  }
}

function addTproxyMarks(rb: RuleBuilder, L: string, uids: string[], gids: string[], mark: string): void {
  // Save the mark original_src sets as the connection mark.
  rb.append(MANGLE, Chain.prerouting, 'meta l4proto tcp', 'mark', mark, COUNTER, 'ct mark set mark');
  rb.append(MANGLE, Chain.output, 'oifname', 'lo', 'meta l4proto tcp', 'mark', mark, COUNTER, 'return');
  for (const [match, ids] of [
    ['skuid', uids],
    ['skgid', gids],
  ] as const) {
    for (const id of ids) {
      rb.append(MANGLE, Chain.output, 'oifname', 'lo', 'meta l4proto tcp', 'ip daddr', '!=', L, match, id, COUNTER, 'meta mark set', OUTBOUND_MARK);
      rb.appendV6(
        MANGLE,
        Chain.output,
        'oifname',
        'lo',
        'meta l4proto tcp',
        'ip6 daddr',
        '!=',
        LOOPBACK_V6,
        match,
        id,
        COUNTER,
        'meta mark set',
        OUTBOUND_MARK,
      );
    }
  }
  rb.append(MANGLE, Chain.output, 'meta l4proto tcp', 'ct', 'mark', mark, COUNTER, 'meta mark set', 'ct', 'mark');
  // Keep already-diverted, passthrough and app-to-self traffic out of TPROXY.
  rb.insert(MANGLE, Chain.inbound, 0, 'meta l4proto tcp', 'mark', mark, COUNTER, 'return');
  rb.insert(MANGLE, Chain.inbound, 1, 'iifname', 'lo', 'meta l4proto tcp', 'ip saddr', PASSTHROUGH_V4, COUNTER, 'return');
  rb.insertV6(MANGLE, Chain.inbound, 1, 'iifname', 'lo', 'meta l4proto tcp', 'ip6 saddr', PASSTHROUGH_V6, COUNTER, 'return');
  rb.insert(MANGLE, Chain.inbound, 2, 'iifname', 'lo', 'meta l4proto tcp', 'mark', '!=', OUTBOUND_MARK, COUNTER, 'return');
}
