// The sidecar capture the apply benchmarks measure: a full TPROXY config (nat, mangle and raw
// tables, IPv4 and IPv6, DNS capture), built by the plugin's own code.
import { buildCapture } from '../../src/capture/build';
import { parseCaptureConfig } from '../../src/capture/config';
import { RawConfig } from '../../src/capture/fields';
import { Transaction } from '../../src/nft/transaction';

/** The full TPROXY sidecar capture's transaction; `extra` adds to its settings. */
export function tproxyCapture(extra: RawConfig = {}): Transaction {
  return buildCapture(
    parseCaptureConfig({
      inboundInterceptionMode: 'TPROXY',
      inboundPortsInclude: '*',
      outboundIPRangesInclude: '9.9.0.0/16',
      redirectDNS: true,
      enableIPv6: true,
      dnsServersV4: ['127.0.0.53'],
      ...extra,
    }),
  );
}
