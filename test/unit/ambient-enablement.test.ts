// Enablement selectors (Istio's enablement_selector.go semantics) and the plugin -> agent event
// body (nodeagent.CNIPluginAddEvent as Go's encoding/json writes and reads it).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeCniAddEvent, eventFromPrevResult, parseCniAddEvent } from '../../src/ambient/cni-event';
import { namespaceMatchesEnablement, podMatchesEnablement, selectorMatches } from '../../src/ambient/enablement';
import { parsePrevResult } from '../../src/cni/netconf';
import { formatIp } from '../../src/net/ip';

const HELM = [
  { podSelector: { matchLabels: { 'istio.io/dataplane-mode': 'ambient' } } },
  {
    podSelector: { matchExpressions: [{ key: 'istio.io/dataplane-mode', operator: 'NotIn', values: ['none'] }] },
    namespaceSelector: { matchLabels: { 'istio.io/dataplane-mode': 'ambient' } },
  },
];
const pod = (labels: Record<string, string> = {}, extra: { hostNetwork?: boolean; annotations?: Record<string, string> } = {}) => ({
  metadata: { labels, annotations: extra.annotations ?? {} },
  spec: { hostNetwork: extra.hostNetwork ?? false },
});
const AMBIENT_NS = { 'istio.io/dataplane-mode': 'ambient' };

test('label selector operators: matchLabels, In, NotIn (absent key matches), Exists, DoesNotExist', () => {
  assert.equal(selectorMatches(undefined, {}), true);
  assert.equal(selectorMatches({}, { a: '1' }), true);
  assert.equal(selectorMatches({ matchLabels: { a: '1' } }, { a: '1', b: '2' }), true);
  assert.equal(selectorMatches({ matchLabels: { a: '1' } }, { a: '2' }), false);
  assert.equal(selectorMatches({ matchLabels: { a: '' } }, {}), false, 'an empty value still needs the key');
  const e = (operator: string, values?: string[]) => ({ matchExpressions: [{ key: 'k', operator, values }] });
  assert.equal(selectorMatches(e('In', ['x', 'y']), { k: 'y' }), true);
  assert.equal(selectorMatches(e('In', ['x']), {}), false);
  assert.equal(selectorMatches(e('NotIn', ['x']), {}), true);
  assert.equal(selectorMatches(e('NotIn', ['x']), { k: 'x' }), false);
  assert.equal(selectorMatches(e('Exists'), { k: '' }), true);
  assert.equal(selectorMatches(e('Exists'), {}), false);
  assert.equal(selectorMatches(e('DoesNotExist'), {}), true);
  assert.equal(selectorMatches(e('DoesNotExist'), { k: 'v' }), false);
  assert.equal(selectorMatches(e('Bogus'), { k: 'v' }), false);
  assert.equal(selectorMatches({ matchLabels: { toString: 'x' } }, {}), false, 'no prototype keys');
});

test("Helm's default selectors: pod label, or namespace label unless the pod opts out; host network and sidecars never", () => {
  assert.equal(podMatchesEnablement(HELM, pod({ 'istio.io/dataplane-mode': 'ambient' }), {}), true, 'pod label in any namespace');
  assert.equal(podMatchesEnablement(HELM, pod(), AMBIENT_NS), true, 'ambient namespace');
  assert.equal(podMatchesEnablement(HELM, pod({ 'istio.io/dataplane-mode': 'none' }), AMBIENT_NS), false, 'opted out');
  assert.equal(podMatchesEnablement(HELM, pod(), {}), false);
  assert.equal(podMatchesEnablement(HELM, pod(), null), false);
  assert.equal(podMatchesEnablement(HELM, pod({}, { hostNetwork: true }), AMBIENT_NS), false);
  assert.equal(podMatchesEnablement(HELM, pod({}, { annotations: { 'sidecar.istio.io/status': '{}' } }), AMBIENT_NS), false);
  assert.equal(podMatchesEnablement([], pod({ 'istio.io/dataplane-mode': 'ambient' }), AMBIENT_NS), false, 'no selectors: nothing');
  assert.equal(podMatchesEnablement([{}], pod(), {}), true, 'an entry with no selectors matches every pod');
});

test('namespace matching counts only entries with a namespace selector', () => {
  assert.equal(namespaceMatchesEnablement(HELM, AMBIENT_NS), true);
  assert.equal(namespaceMatchesEnablement(HELM, {}), false);
  assert.equal(namespaceMatchesEnablement([{ podSelector: { matchLabels: { a: 'b' } } }], {}), false, 'empty namespace selector does not count');
});

test("event body: Go's field names, net.IPNet as {IP, Mask(base64)}, nulls as Go writes them", () => {
  const prev = parsePrevResult({
    cniVersion: '1.0.0',
    interfaces: [{ name: 'eth0', sandbox: '/var/run/netns/x' }],
    ips: [{ interface: 0, address: '10.244.1.5/24', gateway: '10.244.1.1' }, { address: 'fd00::5/64' }],
  });
  const ev = eventFromPrevResult('/var/run/netns/cni-1234', 'web-1', 'shop', prev);
  assert.equal(
    encodeCniAddEvent(ev),
    '{"Netns":"/var/run/netns/cni-1234","PodName":"web-1","PodNamespace":"shop","IPs":[' +
      '{"Interface":0,"Address":{"IP":"10.244.1.5","Mask":"////AA=="},"Gateway":"10.244.1.1"},' +
      '{"Interface":null,"Address":{"IP":"fd00::5","Mask":"//////////8AAAAAAAAAAA=="},"Gateway":null}]}',
  );
  assert.equal(encodeCniAddEvent(eventFromPrevResult('/n', 'p', 'ns', undefined)), '{"Netns":"/n","PodName":"p","PodNamespace":"ns","IPs":null}');

  const back = parseCniAddEvent(encodeCniAddEvent(ev));
  assert.equal(back.netns, '/var/run/netns/cni-1234');
  assert.deepEqual(
    back.ips.map((x) => [formatIp(x.address), x.prefixLength, x.interface, x.gateway && formatIp(x.gateway)]),
    [
      ['10.244.1.5', 24, 0, '10.244.1.1'],
      ['fd00::5', 64, null, null],
    ],
  );
});

test('event parsing as Go decodes it: keys case-insensitive, null = absent; malformed bodies refused with the field named', () => {
  const e = parseCniAddEvent('{"netns":"/n","podname":"p","PODNAMESPACE":"ns","ips":null}');
  assert.deepEqual([e.netns, e.podName, e.podNamespace, e.ips.length], ['/n', 'p', 'ns', 0]);
  const mapped = parseCniAddEvent(
    '{"Netns":"/n","PodName":"p","PodNamespace":"ns","IPs":[{"Address":{"IP":"::ffff:10.0.0.9","Mask":"/////////////////////w=="}}]}',
  );
  assert.equal(formatIp(mapped.ips[0].address), '::ffff:10.0.0.9', 'kept as given; the agent unmaps');
  for (const [body, re] of [
    ['', /empty request body/],
    ['nope', /not JSON/],
    ['"x"', /expected a JSON object/],
    ['{"Netns":5}', /Netns: expected a string/],
    ['{"Netns":"x/y"}', /absolute path/],
    ['{"IPs":{}}', /IPs: expected a list/],
    ['{"IPs":[{"Address":{"IP":"1.2.3"}}]}', /IPs\[0\]\.Address\.IP/],
    ['{"IPs":[{"Interface":"0","Address":{"IP":"1.2.3.4"}}]}', /IPs\[0\]\.Interface/],
    ['{"IPs":[{"Address":{"IP":"1.2.3.4"},"Gateway":"gw"}]}', /IPs\[0\]\.Gateway/],
  ] as const) {
    assert.throws(() => parseCniAddEvent(body), re, body);
  }
});
