// Annotations and istio-proxy settings -> Redirect -> CaptureConfig: defaults, every annotation
// with good and bad values, the proxy container's UID/GID and env, and what reaches the rules.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { buildCapture } from '../../src/capture/build';
import { render } from '../../src/nft/transaction';
import { Annotation, captureConfigFor, extractPodInfo, parseRedirect, routePlanFor } from '../../src/redirect';
import { InputError } from '../../src/values/errors';
import { sidecarPod } from '../support/cni-fakes';

const redirectOf = (annotations: Record<string, string> = {}, over: Parameters<typeof sidecarPod>[0] = {}, warn?: (m: string) => void) =>
  parseRedirect(extractPodInfo(sidecarPod({ ...over, annotations })), warn);

const texts = (x: '*' | { text: string }[]) => (x === '*' ? '*' : x.map((c) => c.text));

test('defaults: REDIRECT to 15001, uid/gid 1337, all outbound, inbound * minus 15020/15021/15090, outbound minus 15020', () => {
  const r = redirectOf();
  assert.equal(r.targetPort, 15001);
  assert.equal(r.mode, 'REDIRECT');
  assert.equal(r.uid, 1337);
  assert.equal(r.gid, 1337);
  assert.equal(r.includeIPCidrs, '*');
  assert.deepEqual(r.excludeIPCidrs, []);
  assert.equal(r.includeInboundPorts, '*');
  assert.deepEqual(r.excludeInboundPorts, [15020, 15021, 15090]);
  assert.deepEqual(r.includeOutboundPorts, []);
  assert.deepEqual(r.excludeOutboundPorts, [15020]);
  assert.deepEqual(r.rerouteVirtualInterfaces, []);
  assert.deepEqual(r.excludeInterfaces, []);
  assert.equal(r.dnsRedirect || r.dualStack || r.invalidDrop, false);
  assert.equal(r.from.mode, 'default');
});

test('every annotation, good values', () => {
  const r = redirectOf({
    [Annotation.interceptionMode]: 'TPROXY',
    [Annotation.includeOutboundIPRanges]: '10.0.0.0/8, fd00::/8',
    [Annotation.excludeOutboundIPRanges]: '10.96.0.1/32,2001:db8:0:0::1/128',
    [Annotation.includeInboundPorts]: '8080,9090',
    [Annotation.excludeInboundPorts]: '9090,15021',
    [Annotation.includeOutboundPorts]: '3306',
    [Annotation.excludeOutboundPorts]: '',
    [Annotation.excludeInterfaces]: 'eth1, net-2',
    [Annotation.rerouteVirtualInterfaces]: 'tap0,k6t-eth0',
  });
  assert.equal(r.mode, 'TPROXY');
  assert.deepEqual(texts(r.includeIPCidrs), ['10.0.0.0/8', 'fd00::/8']);
  assert.deepEqual(texts(r.excludeIPCidrs), ['10.96.0.1/32', '2001:db8::1/128']);
  assert.deepEqual(r.includeInboundPorts, [8080, 9090]);
  assert.deepEqual(r.excludeInboundPorts, [9090, 15021, 15020, 15090]);
  assert.deepEqual(r.includeOutboundPorts, [3306]);
  assert.deepEqual(r.excludeOutboundPorts, []);
  assert.deepEqual(r.excludeInterfaces, ['eth1', 'net-2']);
  assert.deepEqual(r.rerouteVirtualInterfaces, ['tap0', 'k6t-eth0']);
  assert.equal(r.from.includeIPCidrs, `annotation ${Annotation.includeOutboundIPRanges}`);
});

test('an empty includeInboundPorts is valid in REDIRECT and TPROXY (no inbound capture)', () => {
  for (const mode of ['REDIRECT', 'TPROXY']) {
    const r = redirectOf({ [Annotation.interceptionMode]: mode, [Annotation.includeInboundPorts]: '' });
    assert.deepEqual(r.includeInboundPorts, []);
    const cfg = captureConfigFor(r, { netnsPath: '/n', enableIPv6: false });
    assert.deepEqual(cfg.inboundPortsInclude, []);
    const text = render(buildCapture(cfg));
    assert.ok(!text.includes('jump istio-inbound'), text);
    assert.ok(!text.includes('tproxy'), text);
    // No inbound capture in TPROXY means no TPROXY routing either.
    assert.equal(routePlanFor(cfg), undefined);
  }
});

test('empty include/exclude CIDR lists are valid; * includes everything', () => {
  const r = redirectOf({ [Annotation.includeOutboundIPRanges]: '', [Annotation.excludeOutboundIPRanges]: ' ' });
  assert.deepEqual(r.includeIPCidrs, []);
  assert.deepEqual(r.excludeIPCidrs, []);
});

test('the deprecated kubevirtInterfaces counts only when reroute-virtual-interfaces is absent', () => {
  assert.deepEqual(redirectOf({ [Annotation.kubevirtInterfaces]: 'old0' }).rerouteVirtualInterfaces, ['old0']);
  const both = redirectOf({ [Annotation.kubevirtInterfaces]: 'old0', [Annotation.rerouteVirtualInterfaces]: 'new0' });
  assert.deepEqual(both.rerouteVirtualInterfaces, ['new0']);
  // Present but empty still wins, so an invalid deprecated value is not even read.
  const empty = redirectOf({ [Annotation.kubevirtInterfaces]: 'bad name', [Annotation.rerouteVirtualInterfaces]: '' });
  assert.deepEqual(empty.rerouteVirtualInterfaces, []);
});

/** A bad value: InputError naming the annotation key and the whole value. */
function assertBad(annotations: Record<string, string>, key: string, value: string, reason?: RegExp) {
  assert.throws(
    () => redirectOf(annotations),
    (e: Error) => {
      assert.ok(e instanceof InputError, String(e));
      assert.ok(e.message.includes(`annotation ${key}`), e.message);
      assert.ok(e.message.includes(JSON.stringify(value)), e.message);
      if (reason) assert.match(e.message, reason);
      return true;
    },
  );
}

test('bad values are refused naming the annotation and the value (never defaulted)', () => {
  const A = Annotation;
  const bad: [string, string, RegExp?][] = [
    [A.interceptionMode, 'tproxy', /REDIRECT or TPROXY/],
    [A.interceptionMode, '', /REDIRECT or TPROXY/],
    [A.interceptionMode, 'NONE'],
    [A.includeOutboundIPRanges, '10.0.0.0/8; flush ruleset', /item "10.0.0.0\/8; flush ruleset"/],
    [A.includeOutboundIPRanges, '10.0.0.0', /CIDR/],
    [A.includeOutboundIPRanges, '10.0.0.0/33'],
    [A.includeOutboundIPRanges, '10.0.0.0/8,'],
    [A.includeOutboundIPRanges, '10.0.0.0/8,*'],
    [A.includeOutboundIPRanges, 'fe80::1%eth0/64'],
    [A.excludeOutboundIPRanges, '*', /cannot be excluded/],
    [A.excludeOutboundIPRanges, '1.2.3.4/32 } ; add rule'],
    [A.includeInboundPorts, '1,,2', /empty item/],
    [A.includeInboundPorts, '80,http'],
    [A.includeInboundPorts, '65536', /range/],
    [A.includeInboundPorts, '0'],
    [A.includeInboundPorts, '-1'],
    [A.includeInboundPorts, '80 443'],
    [A.excludeInboundPorts, '*', /includeInboundPorts/],
    [A.excludeInboundPorts, '15020,,'],
    [A.includeOutboundPorts, '*', /includeOutboundIPRanges/],
    [A.includeOutboundPorts, '3306;drop'],
    [A.excludeOutboundPorts, '*'],
    [A.excludeOutboundPorts, '1,2,'],
    [A.excludeInterfaces, 'eth 0'],
    [A.excludeInterfaces, 'eth0,,eth1', /empty item/],
    [A.excludeInterfaces, 'averyveryverylongname'],
    [A.excludeInterfaces, '0eth', /start with a letter/],
    [A.excludeInterfaces, 'eth0;flush'],
    [A.rerouteVirtualInterfaces, 'tap/0'],
    [A.kubevirtInterfaces, 'tap{0}'],
  ];
  for (const [key, value, reason] of bad) assertBad({ [key]: value }, key, value, reason);
});

test('no annotation text reaches the rules: only parsed values are rendered', () => {
  const r = redirectOf({
    [Annotation.includeOutboundIPRanges]: ' 10.0.0.1/8 ',
    [Annotation.includeInboundPorts]: ' 0080 , 443',
    [Annotation.excludeInterfaces]: ' eth1 ',
  });
  const text = render(buildCapture(captureConfigFor(r, { netnsPath: '/n', enableIPv6: false })));
  assert.ok(text.includes('ip daddr 10.0.0.1/8'), 'CIDR as netip prints it (host bits kept)');
  assert.ok(text.includes('tcp dport 80 '), 'port as a number');
  assert.ok(!text.includes('0080') && !text.includes(' eth1 ,'));
  assert.ok(text.includes('iifname eth1 counter return'));
});

test('istio-proxy runAsUser/runAsGroup: used when set and non-zero, else 1337; invalid values refused', () => {
  assert.deepEqual(
    [redirectOf({}, { securityContext: { runAsUser: 1000670000, runAsGroup: 5 } })].map((r) => [r.uid, r.gid]),
    [[1000670000, 5]],
  );
  assert.deepEqual(
    [redirectOf({}, { securityContext: { runAsUser: 0, runAsGroup: 0 } })].map((r) => [r.uid, r.gid]),
    [[1337, 1337]],
  );
  assert.deepEqual(
    [redirectOf({}, { securityContext: { runAsUser: 42 } })].map((r) => [r.uid, r.gid]),
    [[42, 1337]],
  );
  assert.throws(
    () => redirectOf({}, { securityContext: { runAsUser: -5 } }),
    (e: Error) => /istio-proxy securityContext.runAsUser/.test(e.message),
  );
  assert.throws(
    () => redirectOf({}, { securityContext: { runAsGroup: 2 ** 33 } }),
    (e: Error) => /runAsGroup/.test(e.message),
  );
});

test('istio-proxy env: DNS capture sets redirectDNS and captureAllDNS; INVALID_DROP; ISTIO_DUAL_STACK; bad booleans warn and read false', () => {
  const warnings: string[] = [];
  const r = redirectOf(
    {},
    {
      env: [
        { name: 'ISTIO_META_DNS_CAPTURE', value: 'true' },
        { name: 'INVALID_DROP', value: '1' },
        { name: 'ISTIO_DUAL_STACK', value: 'yes' },
      ],
    },
    (m) => warnings.push(m),
  );
  assert.equal(r.dnsRedirect, true);
  assert.equal(r.invalidDrop, true);
  assert.equal(r.dualStack, false);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /ISTIO_DUAL_STACK="yes"/);
  const cfg = captureConfigFor(r, { netnsPath: '/n', enableIPv6: false });
  assert.equal(cfg.redirectDNS, true);
  assert.equal(cfg.captureAllDNS, true);
  assert.equal(cfg.dropInvalid, true);
  // valueFrom (no literal value) reads as "": not a boolean.
  const r2 = redirectOf({}, { env: [{ name: 'ISTIO_META_DNS_CAPTURE' }] }, () => undefined);
  assert.equal(r2.dnsRedirect, false);
});

test('capture config: owner groups and loopback CIDR come from the plugin process env, errors name the variable', () => {
  const r = redirectOf();
  const dflt = captureConfigFor(r, { netnsPath: '/n', enableIPv6: true });
  assert.equal(dflt.ownerGroupsInclude, '*');
  assert.deepEqual(dflt.ownerGroupsExclude, []);
  assert.equal(dflt.hostIPv4LoopbackCidr.text, '127.0.0.1/32');
  assert.equal(dflt.enableIPv6, true);
  assert.equal(dflt.hostFilesystemPodNetwork, true);
  const env = { ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE: '1001,wheel', ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR: '127.0.0.0/8' };
  const cfg = captureConfigFor(r, { netnsPath: '/n', enableIPv6: false, env });
  assert.deepEqual(cfg.ownerGroupsExclude, ['1001', 'wheel']);
  assert.equal(cfg.hostIPv4LoopbackCidr.text, '127.0.0.0/8');
  assert.throws(
    () => captureConfigFor(r, { netnsPath: '/n', enableIPv6: false, env: { ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR: '10.0.0.0/8' } }),
    (e: Error) => /environment variable ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR/.test(e.message),
  );
});

test('route plan: TPROXY with inbound ports gets policy routing; IPv6 adds ::6 on lo', () => {
  const cfg = (mode: string, ipv6: boolean) => captureConfigFor(redirectOf({ [Annotation.interceptionMode]: mode }), { netnsPath: '/n', enableIPv6: ipv6 });
  assert.equal(routePlanFor(cfg('REDIRECT', false)), undefined);
  assert.deepEqual(routePlanFor(cfg('REDIRECT', true)), { kind: 'sidecar', loopbackV6: true });
  assert.deepEqual(routePlanFor(cfg('TPROXY', false)), { kind: 'sidecar', loopbackV6: false, tproxy: { mark: 1337, table: 133, ipv6: false } });
  assert.deepEqual(routePlanFor(cfg('TPROXY', true)), { kind: 'sidecar', loopbackV6: true, tproxy: { mark: 1337, table: 133, ipv6: true } });
});

test('pod info: init and regular containers count, native sidecar istio-proxy, proxy type', () => {
  const pi = extractPodInfo(sidecarPod({ proxyAsInit: true, initContainers: ['istio-validation'], args: ['proxy', 'router'] }));
  assert.deepEqual([...pi.containers].sort(), ['app', 'istio-proxy', 'istio-validation']);
  assert.equal(pi.proxyType, 'router');
  const none = extractPodInfo({ metadata: { name: 'x' } });
  assert.deepEqual([...none.containers], []);
  assert.equal(none.proxyType, '');
});
