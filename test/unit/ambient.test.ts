// Ambient rule inputs, probe-set operations and their nft text, without root.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildHostRules, buildHostSetup, buildInpodRules, deleteHostRules, deleteInpodRules } from '../../src/ambient/build';
import {
  NO_POD_OVERRIDES,
  parseAmbientConfig,
  parseAmbientRulesObject,
  parseHostRuleParams,
  parsePodOverrides,
  podOverridesFromAnnotations,
} from '../../src/ambient/config';
import { findKubeletUid } from '../../src/ambient/kubelet-uid';
import { addProbeAddress, createProbeSets, deleteProbeAddress, destroyProbeSets, flushProbeSets } from '../../src/ambient/probe-sets';
import { parseIp } from '../../src/net/ip';
import { FakeNft } from '../../src/nft/fake';
import { goQuote, render } from '../../src/nft/transaction';
import { InputError } from '../../src/values/errors';
import { parsePodUid } from '../../src/values/typed';
import { tempDir } from '../support/tmp';

const ip = (s: string) => parseIp(s)!;
const uid = (s: string) => parsePodUid('test', s);
const sets4 = { prefix: 'istio-inpod-probes', ipv6: false } as const;
const sets46 = { prefix: 'istio-inpod-probes', ipv6: true } as const;

function throwsNaming(fn: () => unknown, ...parts: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof InputError, `an InputError, got ${e}`);
    assert.ok(!e.message.includes('\n'), 'one line');
    for (const p of parts) assert.ok(e.message.includes(p), `"${e.message}" names ${p}`);
    return true;
  });
}

test('sets and elements render as knftables v0.0.21 writes them', () => {
  assert.equal(
    render(createProbeSets(sets46)),
    'add table inet istio-ambient-nat\n' +
      'add set inet istio-ambient-nat istio-inpod-probes-v4 { type ipv4_addr ; comment "UUID of the pods that are part of ambient mesh" ; }\n' +
      'add set inet istio-ambient-nat istio-inpod-probes-v6 { type ipv6_addr ; comment "UUID of the pods that are part of ambient mesh" ; }\n',
  );
  const u = uid('0d6e4a8f-1b2c-4d3e-9f00-123456789abc');
  assert.equal(
    render(addProbeAddress(sets4, ip('10.1.2.3'), u)),
    'add element inet istio-ambient-nat istio-inpod-probes-v4 { 10.1.2.3 comment "0d6e4a8f-1b2c-4d3e-9f00-123456789abc" }\n',
  );
  assert.equal(render(deleteProbeAddress(sets4, ip('10.1.2.3'))), 'delete element inet istio-ambient-nat istio-inpod-probes-v4 { 10.1.2.3 }\n');
  assert.equal(
    render(flushProbeSets(sets46)),
    'flush set inet istio-ambient-nat istio-inpod-probes-v4\nflush set inet istio-ambient-nat istio-inpod-probes-v6\n',
  );
  assert.equal(render(destroyProbeSets()), 'add table inet istio-ambient-nat\ndelete table inet istio-ambient-nat\n');
});

test('probe addresses: mapped IPv4 goes to the v4 set, IPv6 only with IPv6 on, canonical text', () => {
  const u = uid('pod-1');
  assert.match(render(addProbeAddress(sets4, ip('::ffff:10.0.0.9'), u)), /istio-inpod-probes-v4 \{ 10\.0\.0\.9 comment "pod-1" \}/);
  assert.deepEqual(addProbeAddress(sets4, ip('fd00::1'), u), []);
  assert.deepEqual(deleteProbeAddress(sets4, ip('fd00::1')), []);
  assert.match(render(addProbeAddress(sets46, ip('FD00:0:0::1'), u)), /istio-inpod-probes-v6 \{ fd00::1 comment "pod-1" \}/);
});

test('goQuote matches Go %q for ASCII', () => {
  assert.equal(goQuote('abc'), '"abc"');
  assert.equal(goQuote('a"b\\c'), '"a\\"b\\\\c"');
  assert.equal(goQuote('\n\t\x01\x7f'), '"\\n\\t\\x01\\x7f"');
});

test('pod UIDs: plain charset only, so a comment cannot break out of its quotes', () => {
  assert.equal(parsePodUid('uid', '0d6e4a8f-1b2c-4d3e-9f00-123456789abc'), '0d6e4a8f-1b2c-4d3e-9f00-123456789abc');
  throwsNaming(() => parsePodUid('pod uid', 'a" ; flush ruleset ; "'), 'pod uid', 'flush ruleset');
  throwsNaming(() => parsePodUid('pod uid', ''), 'pod uid');
  throwsNaming(() => parsePodUid('pod uid', 'x'.repeat(129)), 'pod uid');
});

test('fake nft: flush table keeps sets and elements; an existing element keeps its comment; missing sets fail', () => {
  const nft = new FakeNft();
  nft.run([...createProbeSets(sets4), ...addProbeAddress(sets4, ip('10.0.0.1'), uid('a'))]);
  nft.run(addProbeAddress(sets4, ip('10.0.0.1'), uid('b')));
  assert.deepEqual(nft.elements('inet', 'istio-ambient-nat', 'istio-inpod-probes-v4'), [{ key: ['10.0.0.1'], comment: 'a' }]);
  const cfg = parseAmbientConfig({});
  nft.run(buildHostRules(cfg, parseHostRuleParams({ kubeletUID: '0' })));
  assert.deepEqual(nft.elements('inet', 'istio-ambient-nat', 'istio-inpod-probes-v4'), [{ key: ['10.0.0.1'], comment: 'a' }]);
  nft.run(deleteHostRules());
  assert.doesNotMatch(nft.dump(), /add rule/);
  assert.equal(nft.elements('inet', 'istio-ambient-nat', 'istio-inpod-probes-v4')!.length, 1);
  assert.throws(() => nft.run(deleteProbeAddress(sets4, ip('10.0.0.2'))), /no such element/);
  // A host rule without its sets is refused, like the kernel's "no such set".
  assert.throws(() => new FakeNft().run(buildHostRules(cfg, parseHostRuleParams({ kubeletUID: '0' }))), /no such set istio-inpod-probes-v4/);
  // With the sets in the same transaction it goes through.
  const v6 = parseAmbientConfig({ enableIPv6: true });
  new FakeNft().run(buildHostSetup(v6, parseHostRuleParams({ kubeletUID: '0' })));
});

test('AmbientConfig: production defaults for missing keys', () => {
  const cfg = parseAmbientConfig({});
  assert.equal(cfg.hostProbeSNATAddress.text, '169.254.7.127');
  assert.equal(cfg.hostProbeV6SNATAddress.text, 'fd16:9254:7127:1337:ffff:ffff:ffff:ffff');
  assert.equal(cfg.enableIPv6, false);
  assert.equal(cfg.redirectDNS, false);
  assert.deepEqual(parsePodOverrides({}), NO_POD_OVERRIDES);
  assert.equal(parseHostRuleParams({ kubeletUID: 0 }).probeIPSetName, 'istio-inpod-probes');
  // netip.Addr.String(): the SNAT address is written in canonical form.
  assert.equal(parseAmbientConfig({ hostProbeV6SNATAddress: 'FD16:0000::0001' }).hostProbeV6SNATAddress.text, 'fd16::1');
});

test('bad values name the key and the value', () => {
  throwsNaming(() => parseAmbientConfig({ enableIPv6: 'yes' }), 'config key "enableIPv6"', '"yes"');
  throwsNaming(() => parseAmbientConfig({ hostProbeSNATAddress: 'fd00::1' }), 'config key "hostProbeSNATAddress"', '"fd00::1"', 'IPv4');
  throwsNaming(() => parseAmbientConfig({ hostProbeV6SNATAddress: '10.0.0.1' }), 'config key "hostProbeV6SNATAddress"', 'IPv6');
  throwsNaming(() => parseAmbientConfig({ hostProbeSNATAddress: '1.2.3.4 accept' }), 'hostProbeSNATAddress', '1.2.3.4 accept');
  throwsNaming(() => parseAmbientConfig({ enableIpv6: true }), 'config key "enableIpv6"', 'unknown config key');
  throwsNaming(() => parsePodOverrides({ dnsProxy: 'on' }), 'config key "dnsProxy"', '"on"', 'PodDNSUnset');
  throwsNaming(() => parsePodOverrides({ dnsProxy: 1 }), 'config key "dnsProxy"', '1');
  throwsNaming(() => parsePodOverrides({ virtualInterfaces: ['eth0', 'x; flush ruleset'] }), 'config key "virtualInterfaces"', 'x; flush ruleset');
  throwsNaming(() => parsePodOverrides({ virtualInterfaces: 'eth0,{ 1 }' }), 'virtualInterfaces', '{ 1 }');
  throwsNaming(() => parsePodOverrides({ ingressMode: 'true' }), 'config key "ingressMode"', '"true"');
  throwsNaming(() => parseHostRuleParams({}), 'config key "kubeletUID"', 'required');
  throwsNaming(() => parseHostRuleParams({ kubeletUID: 'root' }), 'config key "kubeletUID"', '"root"');
  throwsNaming(() => parseHostRuleParams({ kubeletUID: '-1' }), 'config key "kubeletUID"', '"-1"');
  throwsNaming(() => parseHostRuleParams({ kubeletUID: '0', probeIPSetName: 'a b' }), 'config key "probeIPSetName"', '"a b"');
  throwsNaming(() => parseAmbientRulesObject('pod', { kubeletUID: '0' }), 'config key "kubeletUID"', 'unknown config key');
  throwsNaming(() => parseAmbientRulesObject('host', { kubeletUID: '0', ingressMode: true }), 'config key "ingressMode"', 'unknown');
  throwsNaming(() => parseAmbientRulesObject('pod', [1], undefined, '--config f.json'), '--config f.json');
});

test("flat objects: ambient keys and the rule set's own keys together", () => {
  const pod = parseAmbientRulesObject('pod', { enableIPv6: true, ingressMode: true, virtualInterfaces: ' a, ,b ' });
  assert.equal(pod.ruleSet, 'pod');
  if (pod.ruleSet === 'pod') {
    assert.equal(pod.config.enableIPv6, true);
    assert.deepEqual(pod.overrides, { virtualInterfaces: ['a', 'b'], ingressMode: true, dnsProxy: 'PodDNSUnset' });
  }
  const host = parseAmbientRulesObject('host', { kubeletUID: 1000, probeIPSetName: 'my-probes' });
  assert.ok(host.ruleSet === 'host' && host.host.kubeletUID === 1000 && host.host.probeIPSetName === 'my-probes');
});

test('annotations: booleans as Go ParseBool, bad ones ignored with a warning, interface names validated', () => {
  const warnings: string[] = [];
  const o = podOverridesFromAnnotations(
    {
      'ambient.istio.io/bypass-inbound-capture': 'True',
      'ambient.istio.io/dns-capture': 'maybe',
      'istio.io/reroute-virtual-interfaces': ' net1, ,net2 ',
    },
    (m) => warnings.push(m),
  );
  assert.deepEqual(o, { ingressMode: true, dnsProxy: 'PodDNSUnset', virtualInterfaces: ['net1', 'net2'] });
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /dns-capture="maybe"/);
  assert.equal(podOverridesFromAnnotations({ 'ambient.istio.io/dns-capture': 'false' }).dnsProxy, 'PodDNSDisabled');
  assert.equal(podOverridesFromAnnotations({ 'ambient.istio.io/dns-capture': '1' }).dnsProxy, 'PodDNSEnabled');
  assert.deepEqual(podOverridesFromAnnotations({}), NO_POD_OVERRIDES);
  throwsNaming(
    () => podOverridesFromAnnotations({ 'istio.io/reroute-virtual-interfaces': 'eth0 counter accept' }),
    'annotation istio.io/reroute-virtual-interfaces',
    'eth0 counter accept',
  );
});

test('IPv4-only: no IPv6 rule or set anywhere, whatever the overrides', () => {
  const cfg = parseAmbientConfig({ enableIPv6: false, redirectDNS: true });
  for (const ingressMode of [false, true]) {
    for (const dnsProxy of ['PodDNSUnset', 'PodDNSEnabled', 'PodDNSDisabled'] as const) {
      const text = render(buildInpodRules(cfg, parsePodOverrides({ ingressMode, dnsProxy, virtualInterfaces: ['net1'] })));
      assert.doesNotMatch(text, /ip6|::/, `${ingressMode} ${dnsProxy}`);
    }
  }
  const host = render(buildHostSetup(cfg, parseHostRuleParams({ kubeletUID: '0' })));
  assert.doesNotMatch(host, /ip6|-v6|ipv6_addr/);
  const dual = render(buildHostSetup(parseAmbientConfig({ enableIPv6: true }), parseHostRuleParams({ kubeletUID: '0' })));
  assert.match(dual, /ipv6_addr/);
  assert.match(dual, /ip6 daddr @istio-inpod-probes-v6 counter snat to fd16:9254:7127:1337:ffff:ffff:ffff:ffff/);
});

test("the DNS choice: the pod's when it made one, otherwise the node's", () => {
  const has = (redirectDNS: boolean, dnsProxy: 'PodDNSUnset' | 'PodDNSEnabled' | 'PodDNSDisabled') =>
    /redirect to :15053/.test(render(buildInpodRules(parseAmbientConfig({ redirectDNS }), parsePodOverrides({ dnsProxy }))));
  assert.equal(has(true, 'PodDNSUnset'), true);
  assert.equal(has(false, 'PodDNSUnset'), false);
  assert.equal(has(false, 'PodDNSEnabled'), true);
  assert.equal(has(true, 'PodDNSDisabled'), false);
});

test('delete transactions: in-pod tables removed whole, host table only flushed', () => {
  assert.equal(
    render(deleteInpodRules()),
    ['nat', 'mangle', 'raw'].map((t) => `add table inet istio-ambient-${t}\ndelete table inet istio-ambient-${t}\n`).join(''),
  );
  assert.equal(render(deleteHostRules()), 'add table inet istio-ambient-nat\nflush table inet istio-ambient-nat\n');
});

// ---- kubelet UID from a fake /proc ----------------------------------------------------------

function fakeProc(procs: Array<{ pid: number; comm: string; cmdline: string[]; uid: number; noStatus?: boolean }>): string {
  const root = tempDir(path.join(os.tmpdir(), 'icts-proc-'));
  fs.mkdirSync(path.join(root, 'self'));
  fs.writeFileSync(path.join(root, 'uptime'), '1 1\n');
  for (const p of procs) {
    const d = path.join(root, String(p.pid));
    fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, 'comm'), `${p.comm}\n`);
    fs.writeFileSync(path.join(d, 'cmdline'), p.cmdline.length ? `${p.cmdline.join('\0')}\0` : '');
    if (!p.noStatus) fs.writeFileSync(path.join(d, 'status'), `Name:\t${p.comm}\nUid:\t${p.uid}\t${p.uid + 1}\t${p.uid}\t${p.uid}\n`);
  }
  return root;
}

test('kubelet UID: kubelet, kubelite and k3s, first by PID, real UID, none is an error', () => {
  const cases: Array<[string, Parameters<typeof fakeProc>[0], number | undefined]> = [
    ['kubelet', [{ pid: 100, comm: 'kubelet', cmdline: ['/usr/bin/kubelet', '--config=/var/lib/kubelet/config.yaml'], uid: 1001 }], 1001],
    ['kubelite', [{ pid: 100, comm: 'kubelite', cmdline: ['/snap/microk8s/current/bin/kubelite', '--kubelet'], uid: 1002 }], 1002],
    ['k3s', [{ pid: 100, comm: 'k3s', cmdline: ['k3s', 'server'], uid: 1003 }], 1003],
    ['no match', [{ pid: 100, comm: 'bash', cmdline: ['/bin/bash'], uid: 1000 }], undefined],
    ['kubelet name without kubelet args', [{ pid: 100, comm: 'kubelet', cmdline: ['/opt/bin/agent'], uid: 7 }], undefined],
    [
      'several processes',
      [
        { pid: 50, comm: 'sshd', cmdline: ['/usr/sbin/sshd', '-D'], uid: 0 },
        { pid: 75, comm: 'bash', cmdline: ['/bin/bash'], uid: 1000 },
        { pid: 100, comm: 'kubelet', cmdline: ['/usr/bin/kubelet'], uid: 1004 },
      ],
      1004,
    ],
    [
      'lowest PID wins, numerically',
      [
        { pid: 900, comm: 'kubelet', cmdline: ['kubelet'], uid: 9 },
        { pid: 1000, comm: 'kubelet', cmdline: ['kubelet'], uid: 10 },
      ],
      9,
    ],
    [
      'a process that vanished is skipped',
      [
        { pid: 10, comm: 'kubelet', cmdline: ['kubelet'], uid: 1, noStatus: true },
        { pid: 20, comm: 'kubelet', cmdline: ['kubelet'], uid: 2 },
      ],
      2,
    ],
  ];
  for (const [name, procs, want] of cases) {
    const root = fakeProc(procs);
    try {
      if (want === undefined) assert.throws(() => findKubeletUid(root), /no kubelet process/, name);
      else assert.equal(findKubeletUid(root), want, name);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  }
  assert.throws(() => findKubeletUid('/nonexistent/proc'), /\/nonexistent\/proc/);
});
