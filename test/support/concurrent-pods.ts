// The pods, prevResults and expected tables of the 100-pod concurrency tests (standalone plugin
// and shim -> agent): both drive the same mix, so it is written once.
import * as assert from 'node:assert/strict';
import { buildCapture } from '../../src/capture/build';
import { Pod } from '../../src/kube/pod';
import { tablesOf } from '../../src/nft/transaction';
import { planSidecar } from '../../src/plugin/istio';
import { extractPodInfo } from '../../src/redirect';
import { sidecarPod } from './cni-fakes';

/** Pod `<prefix>-<i>` in namespace load: default REDIRECT, TPROXY with inbound capture, and some with port/CIDR annotations. */
export function mixedPod(prefix: string, i: number): Pod {
  const name = `${prefix}-${i}`;
  if (i % 4 === 1) return sidecarPod({ name, namespace: 'load', annotations: { 'sidecar.istio.io/interceptionMode': 'TPROXY', 'traffic.sidecar.istio.io/includeInboundPorts': '9090' } });
  if (i % 4 === 2) return sidecarPod({ name, namespace: 'load', annotations: { 'traffic.sidecar.istio.io/excludeOutboundIPRanges': `10.${i}.0.0/16`, 'traffic.sidecar.istio.io/excludeInboundPorts': String(8000 + i) } });
  return sidecarPod({ name, namespace: 'load' });
}

/** The primary plugin's result for pod `i` in `netns`: an address in 10.<net>.0.0/16. */
export const prevResultIn = (net: number, netns: string, i: number) => ({
  cniVersion: '1.0.0',
  interfaces: [{ name: 'eth0', sandbox: netns }],
  ips: [{ address: `10.${net}.${i >> 8}.${(i & 0xff) + 1}/16`, gateway: `10.${net}.255.254`, interface: 0 }],
  routes: [{ dst: '0.0.0.0/0' }],
  dns: {},
});

/** The tables (`family name`, sorted) the pod's sidecar capture config names. */
export function expectedTables(pod: Pod, netnsPath: string): string[] {
  const p = planSidecar(extractPodInfo(pod), { netnsPath, enableIPv6: false });
  assert.ok(p.capture);
  return tablesOf(buildCapture(p.config)).map((t) => `${t.family} ${t.table}`).sort();
}
