// Sidecar capture tables and their declared chains, in the order Istio writes them.
import { TableSpec } from '../nft/assemble';
import { Priority } from '../nft/transaction';

export const NAT = 'istio-proxy-nat';
export const MANGLE = 'istio-proxy-mangle';
export const RAW = 'istio-proxy-raw';

export const Chain = {
  prerouting: 'prerouting',
  output: 'output',
  inbound: 'istio-inbound',
  redirect: 'istio-redirect',
  inRedirect: 'istio-in-redirect',
  istioOutput: 'istio-output',
  outputDns: 'istio-output-dns',
  divert: 'istio-divert',
  tproxy: 'istio-tproxy',
  drop: 'istio-drop',
} as const;

export const SIDECAR_TABLES: readonly TableSpec[] = [
  {
    family: 'inet',
    name: NAT,
    chains: [
      { name: Chain.prerouting, base: { type: 'nat', hook: 'prerouting', priority: Priority.dstnat } },
      { name: Chain.output, base: { type: 'nat', hook: 'output', priority: Priority.dstnat } },
      { name: Chain.inbound },
      { name: Chain.redirect },
      { name: Chain.inRedirect },
      { name: Chain.istioOutput },
      { name: Chain.outputDns },
    ],
  },
  {
    family: 'inet',
    name: MANGLE,
    chains: [
      { name: Chain.prerouting, base: { type: 'filter', hook: 'prerouting', priority: Priority.mangle } },
      { name: Chain.output, base: { type: 'route', hook: 'output', priority: Priority.mangle } },
      { name: Chain.divert },
      { name: Chain.tproxy },
      { name: Chain.inbound },
      { name: Chain.drop },
    ],
  },
  {
    family: 'inet',
    name: RAW,
    chains: [
      { name: Chain.prerouting, base: { type: 'filter', hook: 'prerouting', priority: Priority.raw } },
      { name: Chain.output, base: { type: 'filter', hook: 'output', priority: Priority.raw } },
      { name: Chain.inbound },
      { name: Chain.outputDns },
    ],
  },
];
