// Ambient mode end to end, as root, on a node made of network namespaces: the real plugin binary's
// ADD posts the pod to the agent (pluginevent.sock); the agent applies the in-pod rules and routes,
// sends the pod's netns fd to the ztunnel stand-in (which opens 15001/15006/15008 inside it and
// acks), adds the pod to the host probe set and annotates it. Then real traffic: the app's
// outbound connection reaches the stand-in's 15001 with its original destination, inbound reaches
// 15006, a kubelet probe (SNATed by the host rule) reaches the app directly; un-enrolling the pod
// (label dataplane-mode=none) restores direct traffic.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { AmbientEnv, KUBELET_UID, TestPod, ipRules, probeAsync, rulesetText } from '../../support/ambient-env';

const env = new AmbientEnv();
let pod: TestPod;

before(() => env.start());
after(() => env.close());

test('CNI ADD of an ambient pod: rules, routes, ztunnel Add with the netns fd, probe set, annotation', async () => {
  pod = await env.addPod('web-1');
  await env.startApp(pod, 8080);
  await env.startNodeServer('10.251.1.1', 9999, 'direct');

  // Before: nothing redirects.
  const direct = await probeAsync(pod.netns.name, pod.nodeIp, 9999);
  assert.equal(direct.label, 'direct', JSON.stringify(direct));

  const r = await env.cniAdd(pod);
  assert.equal(r.code, 0, `plugin ADD failed: ${r.stdout}\n${r.stderr}`);
  assert.equal(JSON.parse(r.stdout).ips[0].address, `${pod.ip}/24`, 'prevResult passed through');

  const add = env.standIn.received.find((x) => x.kind === 'add' && x.uid === pod.uid);
  assert.ok(add && add.kind === 'add', 'ztunnel got the Add');
  assert.equal(add.name, 'web-1');
  assert.equal(add.namespace, 'shop');
  assert.equal(add.serviceAccount, 'sa-web-1');
  const fs = await import('node:fs');
  assert.equal(add.fdIno, fs.statSync(pod.netns.path, { bigint: true }).ino, 'the fd ztunnel got is the pod netns');
  assert.equal(env.redirection(pod), 'enabled');

  const rules = rulesetText(pod.netns.name);
  for (const t of ['istio-ambient-nat', 'istio-ambient-mangle']) assert.match(rules, new RegExp(`table inet ${t}`));
  assert.match(rules, /redirect to :15001/);
  assert.match(rules, /redirect to :15006/);
  assert.doesNotMatch(rules, /ip6/, 'IPv4-only node: no IPv6 rule');
  assert.match(ipRules(pod.netns.name, 4), /fwmark 0x111\/0xfff lookup 100/);
  assert.doesNotMatch(ipRules(pod.netns.name, 6), /fwmark 0x111/);

  const host = rulesetText(env.node.name);
  assert.match(host, new RegExp(`skuid ${KUBELET_UID} ip daddr @istio-inpod-probes-v4 counter packets \\d+ bytes \\d+ snat (ip )?to 169.254.7.127`));
  assert.match(host, new RegExp(`${pod.ip.replace(/\./g, '\\.')} comment "${pod.uid}"`));
  assert.doesNotMatch(host, /ip6|-v6/, 'IPv4-only node: no IPv6 set or rule on the host');
});

test('traffic: outbound reaches the stand-in on 15001 with the original destination; inbound reaches 15006', async () => {
  const out = await probeAsync(pod.netns.name, pod.nodeIp, 9999);
  assert.equal(out.label, 'ztunnel-outbound', JSON.stringify(out));
  assert.equal(out.uid, pod.uid);
  assert.equal(out.local.port, 15001);
  assert.deepEqual(out.origDst && { address: out.origDst.address, port: out.origDst.port }, { address: pod.nodeIp, port: 9999 });

  const inbound = await probeAsync(env.node.name, pod.ip, 8080);
  assert.equal(inbound.label, 'ztunnel-inbound', JSON.stringify(inbound));
  assert.equal(inbound.local.port, 15006);
  assert.equal(inbound.origDst?.port, 8080);
  assert.equal(inbound.origDst?.address, pod.ip);

  // HBONE (15008) is never redirected: it reaches ztunnel's own listener.
  const hbone = await probeAsync(env.node.name, pod.ip, 15008);
  assert.equal(hbone.label, 'ztunnel-hbone', JSON.stringify(hbone));
});

test("kubelet's probe from the host is SNATed to 169.254.7.127 and reaches the app, not ztunnel; other host traffic is redirected", async () => {
  const probe = await probeAsync(env.node.name, pod.ip, 8080, { uid: KUBELET_UID });
  assert.equal(probe.label, 'app-web-1', JSON.stringify(probe));
  assert.equal(probe.remote.address.replace(/^::ffff:/, ''), '169.254.7.127');
  const notKubelet = await probeAsync(env.node.name, pod.ip, 8080, { uid: 4343 });
  assert.equal(notKubelet.label, 'ztunnel-inbound', JSON.stringify(notKubelet));
});

test('un-enrolling (label istio.io/dataplane-mode=none): rules, routes, probe address and annotation go; ztunnel gets Del; traffic is direct again', async () => {
  env.api.upsert(env.podObject(pod, { 'istio.io/dataplane-mode': 'none' }, { 'ambient.istio.io/redirection': 'enabled' }));
  await env.standIn.waitFor(() => env.standIn.received.some((x) => x.kind === 'del' && x.uid === pod.uid), 10_000, 'the Del');
  const deadline = Date.now() + 10_000;
  while (env.redirection(pod) !== undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.equal(env.redirection(pod), undefined, 'annotation removed');
  assert.doesNotMatch(rulesetText(pod.netns.name), /istio-ambient/);
  assert.doesNotMatch(ipRules(pod.netns.name, 4), /fwmark 0x111/);
  assert.doesNotMatch(rulesetText(env.node.name), new RegExp(pod.uid));
  assert.equal(env.standIn.workloads.has(pod.uid), false);

  const out = await probeAsync(pod.netns.name, pod.nodeIp, 9999);
  assert.equal(out.label, 'direct', JSON.stringify(out));
  const inbound = await probeAsync(env.node.name, pod.ip, 8080);
  assert.equal(inbound.label, 'app-web-1', JSON.stringify(inbound));
});

test('agent stop without an upgrade: the host rule and probe sets go; in-pod rules of enrolled pods stay (ztunnel keeps serving them)', async () => {
  const p2 = await env.addPod('web-2');
  const r = await env.cniAdd(p2);
  assert.equal(r.code, 0, r.stdout);
  assert.match(rulesetText(env.node.name), /istio-ambient-nat/);
  await env.stopAgent(false);
  assert.doesNotMatch(rulesetText(env.node.name), /istio-ambient-nat/, 'host table removed');
  assert.match(rulesetText(p2.netns.name), /redirect to :15001/, 'pod rules kept');
  assert.match(ipRules(p2.netns.name, 4), /fwmark 0x111\/0xfff lookup 100/);
});
