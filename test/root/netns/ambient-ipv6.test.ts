// AMBIENT_IPV6=true on a dual-stack node, as root: the pod gets the IPv6 rules, the IPv6 mark rule
// and local route; the host gets the -v6 probe set (holding the pod's IPv6 address) and its SNAT
// rule; IPv6 traffic is redirected both ways and kubelet's IPv6 probe is SNATed to the IPv6 probe
// address and reaches the app. (The IPv4-only case, with no IPv6 rule anywhere, is checked in
// ambient-agent.test.ts.)
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { AmbientEnv, KUBELET_UID, TestPod, ipRules, probeAsync, rulesetText } from '../../support/ambient-env';

const env = new AmbientEnv({ ipv6: true, dualStack: true });
let pod: TestPod;

before(async () => {
  await env.start();
});
after(async () => {
  await env.close();
});

test('dual-stack pod with AMBIENT_IPV6: IPv6 rules, rule and route in the pod; -v6 set and rule on the host', async () => {
  pod = await env.addPod('web6');
  await env.startApp(pod, 8080, '0.0.0.0');
  await env.startApp(pod, 8080, '::');
  await env.startNodeServer(pod.nodeIp6!, 9999, 'direct6');
  const r = await env.cniAdd(pod);
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.equal(env.redirection(pod), 'enabled');

  const rules = rulesetText(pod.netns.name);
  assert.match(rules, /ip6 daddr != ::1 tcp dport != 15008 .*redirect to :15006/);
  assert.match(rules, /ip6 daddr != ::1 .*redirect to :15001/);
  assert.match(rules, /ip6 saddr fd16:9254:7127:1337:ffff:ffff:ffff:ffff .*accept/);
  assert.match(ipRules(pod.netns.name, 6), /fwmark 0x111\/0xfff lookup 100/);

  const host = rulesetText(env.node.name);
  assert.match(host, /set istio-inpod-probes-v6 \{/);
  assert.match(host, new RegExp(`${pod.ip6!.replace(/:/g, ':')} comment "${pod.uid}"`));
  assert.match(host, /ip6 daddr @istio-inpod-probes-v6 counter packets \d+ bytes \d+ snat (ip6 )?to fd16:9254:7127:1337:ffff:ffff:ffff:ffff/);
});

test('IPv6 traffic is redirected: outbound to 15001 with the original destination, inbound to 15006', async () => {
  const out = await probeAsync(pod.netns.name, pod.nodeIp6!, 9999);
  assert.equal(out.label, 'ztunnel-outbound', JSON.stringify(out));
  assert.equal(out.origDst?.address, pod.nodeIp6);
  assert.equal(out.origDst?.port, 9999);
  assert.equal(out.origDst?.family, 'IPv6');

  const inbound = await probeAsync(env.node.name, pod.ip6!, 8080);
  assert.equal(inbound.label, 'ztunnel-inbound', JSON.stringify(inbound));
  assert.equal(inbound.origDst?.address, pod.ip6);
  assert.equal(inbound.origDst?.port, 8080);

  // And IPv4 still is.
  const in4 = await probeAsync(env.node.name, pod.ip, 8080);
  assert.equal(in4.label, 'ztunnel-inbound', JSON.stringify(in4));
});

test("kubelet's IPv6 probe is SNATed to the IPv6 probe address and reaches the app", async () => {
  const probe = await probeAsync(env.node.name, pod.ip6!, 8080, { uid: KUBELET_UID });
  assert.equal(probe.label, 'app-web6', JSON.stringify(probe));
  assert.equal(probe.remote.address, 'fd16:9254:7127:1337:ffff:ffff:ffff:ffff');
});
