// Istio's plugin-dryrun cases: from each case's pod, CNI stdin and CNI_ARGS we derive the capture
// config and compare it, as typed values, with the case's effectiveConfig for every field the
// nftables capture reads. The same case then runs through handleCni with fake dependencies, and
// the transaction it applies must be the one built from effectiveConfig.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { buildCapture } from '../../src/capture/build';
import { CaptureConfig, parseCaptureConfig } from '../../src/capture/config';
import { parseCniArgs } from '../../src/cni/args';
import { decodeStdin, parseNetConf, requireSupportedVersion, configVersion } from '../../src/cni/netconf';
import { Pod } from '../../src/kube/pod';
import { FakeNft } from '../../src/nft/fake';
import { render } from '../../src/nft/transaction';
import { parsePluginConfig } from '../../src/plugin/config';
import { earlyDecision } from '../../src/plugin/decide';
import { handleCni, planSidecar } from '../../src/plugin/istio';
import { extractPodInfo } from '../../src/redirect';
import { fakes } from '../support/cni-fakes';
import { loadSuite } from '../support/conformance';

const cases = loadSuite('plugin-dryrun');

/** The fields the nft capture reads (conformance README, "Fields the nftables capture code actually reads"). */
const CAPTURE_FIELDS: (keyof CaptureConfig)[] = [
  'proxyPort',
  'inboundCapturePort',
  'inboundTunnelPort',
  'proxyUIDs',
  'proxyGIDs',
  'inboundInterceptionMode',
  'inboundTProxyMark',
  'inboundPortsInclude',
  'inboundPortsExclude',
  'ownerGroupsInclude',
  'ownerGroupsExclude',
  'outboundPortsInclude',
  'outboundPortsExclude',
  'outboundIPRangesInclude',
  'outboundIPRangesExclude',
  'rerouteVirtualInterfaces',
  'excludeInterfaces',
  'redirectDNS',
  'captureAllDNS',
  'dnsServersV4',
  'dnsServersV6',
  'dropInvalid',
  'enableIPv6',
  'hostIPv4LoopbackCidr',
  'cleanupOnly',
];

function expectedConfig(c: (typeof cases)[number]): CaptureConfig {
  // hostIP is null in these cases (it depends on the test host); no rule reads it.
  return parseCaptureConfig({ ...c.input.effectiveConfig, hostIP: '' });
}

function derive(c: (typeof cases)[number]): CaptureConfig {
  const obj = decodeStdin(c.input.cniStdin);
  const conf = parseNetConf(obj, requireSupportedVersion(configVersion(obj)));
  const pc = parsePluginConfig(conf.raw);
  const args = parseCniArgs(c.input.cniArgs.args);
  assert.deepEqual(earlyDecision(pc, args), { pass: false });
  const pi = extractPodInfo(c.input.pod as Pod);
  assert.equal(pi.name, args.podName);
  // The upstream goldens hold IPv4 rules only (an IPv4 test host): a single-stack pod netns.
  const plan = planSidecar(pi, { netnsPath: c.input.cniArgs.netns, enableIPv6: false, env: {} });
  assert.ok(plan.capture, 'the pod is captured');
  return plan.config;
}

test('plugin-dryrun suite has its 9 cases', { skip: cases.length === 0 && 'conformance dir absent' }, () => {
  assert.equal(cases.length, 9);
});

for (const c of cases) {
  test(`plugin-dryrun/${c.case}: derived capture config = effectiveConfig (fields the nft capture reads)`, () => {
    const got = derive(c);
    const want = expectedConfig(c);
    for (const f of CAPTURE_FIELDS) assert.deepStrictEqual(got[f], want[f], `field ${f}`);
    // Fields the nft capture does not read but the plugin sets, for completeness.
    assert.equal(got.hostFilesystemPodNetwork, true);
    assert.equal(got.networkNamespace, c.input.effectiveConfig.networkNamespace);
    assert.equal(got.dualStack, c.input.effectiveConfig.dualStack);
    assert.equal(got.inboundTProxyRouteTable, want.inboundTProxyRouteTable);
  });

  test(`plugin-dryrun/${c.case}: derived redirect matches derivedRedirect`, () => {
    const pi = extractPodInfo(c.input.pod as Pod);
    const plan = planSidecar(pi, { netnsPath: '/tmp', enableIPv6: false, env: {} });
    assert.ok(plan.capture);
    const r = plan.redirect;
    const d = c.input.derivedRedirect;
    const list = (x: '*' | { text: string }[] | number[] | string[]) =>
      x === '*' ? '*' : (x as unknown[]).map((v) => (typeof v === 'object' && v ? (v as { text: string }).text : String(v))).join(',');
    assert.deepEqual(
      {
        targetPort: String(r.targetPort),
        redirectMode: r.mode,
        noRedirectUID: String(r.uid),
        noRedirectGID: String(r.gid),
        includeIPCidrs: list(r.includeIPCidrs),
        excludeIPCidrs: list(r.excludeIPCidrs),
        excludeInboundPorts: list(r.excludeInboundPorts),
        excludeOutboundPorts: list(r.excludeOutboundPorts),
        includeInboundPorts: list(r.includeInboundPorts),
        includeOutboundPorts: list(r.includeOutboundPorts),
        rerouteVirtualInterfaces: list(r.rerouteVirtualInterfaces),
        excludeInterfaces: list(r.excludeInterfaces),
        dnsRedirect: r.dnsRedirect,
        dualStack: r.dualStack,
        invalidDrop: r.invalidDrop,
      },
      d,
    );
  });

  test(`plugin-dryrun/${c.case}: handleCni ADD applies the transaction built from effectiveConfig`, async () => {
    const f = fakes([c.input.pod as Pod]);
    const netns = c.input.cniArgs.netns as string;
    f.netns.set(netns, 'ok');
    const env = {
      CNI_COMMAND: 'ADD',
      CNI_CONTAINERID: c.input.cniArgs.containerID,
      CNI_NETNS: netns,
      CNI_IFNAME: c.input.cniArgs.ifName,
      CNI_ARGS: c.input.cniArgs.args,
      CNI_PATH: c.input.cniArgs.path,
    };
    const out = await handleCni(env, c.input.cniStdin, f.deps);
    assert.equal(out.exitCode, 0, out.stdout);
    const result = JSON.parse(out.stdout);
    // prevResult passes through unchanged, stamped with the config's version.
    const prev = JSON.parse(c.input.cniStdin).prevResult;
    delete prev.cniversion;
    assert.deepEqual(result, { cniVersion: '1.0.0', ...prev });
    assert.equal(f.rules.applied.length, 1);
    const want = buildCapture(expectedConfig(c));
    assert.equal(render(f.rules.applied[0].tx), render(want));
    // The transaction is well formed: it applies to an empty nft (chains exist before rules, ...).
    new FakeNft().run(want);
    const tproxy = c.input.effectiveConfig.inboundInterceptionMode === 'TPROXY';
    assert.deepEqual(
      f.rules.routes.map((r) => r.plan),
      tproxy ? [{ kind: 'sidecar', loopbackV6: false, tproxy: { mark: 1337, table: 133, ipv6: false } }] : [],
    );
  });
}
