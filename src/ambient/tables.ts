// Names and numbers of ambient mode's in-pod and host rules: the three istio-ambient-* tables
// with their declared chains (in the order Istio writes them), the ztunnel ports, and the packet
// and connection marks ztunnel and these rules agree on.
import { TableSpec } from '../nft/assemble';
import { Priority, TableRef } from '../nft/transaction';

export const NAT = 'istio-ambient-nat';
export const MANGLE = 'istio-ambient-mangle';
export const RAW = 'istio-ambient-raw';

export const Chain = {
  prerouting: 'prerouting',
  output: 'output',
  postrouting: 'postrouting',
  istioPrerouting: 'istio-prerouting',
  istioOutput: 'istio-output',
} as const;

/** ztunnel's in-pod listeners. */
export const Ports = {
  /** Outbound capture. */
  outbound: 15001,
  /** Inbound plaintext capture. */
  inboundPlaintext: 15006,
  /** HBONE: reaches ztunnel without redirection. */
  hbone: 15008,
  /** ztunnel's DNS proxy. */
  dns: 15053,
} as const;

/** The mark ztunnel puts on its own packets (1337), under its mask. */
export const INPOD_MARK = 0x539;
export const INPOD_MASK = 0xfff;
/** The connection mark set on connections ztunnel accepted, and the fwmark the ip rule matches. */
export const INPOD_TPROXY_MARK = 0x111;
export const INPOD_TPROXY_MASK = 0xfff;
/** The routing table whose default route is `local` on lo, and the preference of its ip rule. */
export const ROUTE_TABLE = 100;
export const RULE_PRIORITY = 32764;

/** Prefix of the host's probe address sets: `<prefix>-v4` and `<prefix>-v6`. */
export const PROBE_SET_PREFIX = 'istio-inpod-probes';
export const PROBE_SET_COMMENT = 'UUID of the pods that are part of ambient mesh';

/** Production defaults of HOST_PROBE_SNAT_IP / HOST_PROBE_SNAT_IPV6. */
export const DEFAULT_PROBE_SNAT_V4 = '169.254.7.127';
export const DEFAULT_PROBE_SNAT_V6 = 'fd16:9254:7127:1337:ffff:ffff:ffff:ffff';

export const hex = (n: number): string => `0x${n.toString(16)}`;

const regular = [{ name: Chain.istioPrerouting }, { name: Chain.istioOutput }];

/** The in-pod tables, in transaction order. */
export const POD_TABLES: readonly TableSpec[] = [
  {
    family: 'inet',
    name: NAT,
    chains: [
      { name: Chain.prerouting, base: { type: 'nat', hook: 'prerouting', priority: Priority.dstnat } },
      { name: Chain.output, base: { type: 'nat', hook: 'output', priority: Priority.dstnat } },
      ...regular,
    ],
  },
  {
    family: 'inet',
    name: MANGLE,
    chains: [
      { name: Chain.prerouting, base: { type: 'filter', hook: 'prerouting', priority: Priority.mangle } },
      { name: Chain.output, base: { type: 'route', hook: 'output', priority: Priority.mangle } },
      ...regular,
    ],
  },
  {
    family: 'inet',
    name: RAW,
    chains: [
      { name: Chain.prerouting, base: { type: 'filter', hook: 'prerouting', priority: Priority.raw } },
      { name: Chain.output, base: { type: 'filter', hook: 'output', priority: Priority.raw } },
      ...regular,
    ],
  },
];

/** The host's table: the SNAT of kubelet's probes, next to the probe address sets. */
export const HOST_TABLE: TableSpec = {
  family: 'inet',
  name: NAT,
  chains: [{ name: Chain.postrouting, base: { type: 'nat', hook: 'postrouting', priority: Priority.srcnat } }],
};

/** The in-pod tables as the dataplane port replaces and removes them. */
export const POD_TABLE_REFS: readonly TableRef[] = POD_TABLES.map((t) => ({ family: t.family, table: t.name }));

/** The host table as the dataplane port lists it. */
export const HOST_TABLE_REF: TableRef = { family: HOST_TABLE.family, table: HOST_TABLE.name };
