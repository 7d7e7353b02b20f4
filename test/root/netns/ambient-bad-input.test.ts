// Bad input to the ambient agent, as root: each is logged and refused for that pod (or that
// connection) while an enrolled pod keeps being redirected and nothing of its state changes.
//   - CNI events: an empty, non-JSON, oversized or malformed body (400), a GET (405), an event for
//     a netns that does not exist, for a pod that is not in the mesh, and a virtual-interface
//     annotation carrying nft syntax (500; the plugin's ADD fails with code 108);
//   - ZDS: a second client that sends garbage, one that never acks (its request fails after the
//     ack deadline, it is dropped, the pod is enrolled through the good ztunnel on retry).
import assert from 'node:assert/strict';
import * as http from 'node:http';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { postCniAddEvent } from '../../../src/plugin/ambient';
import { SeqpacketSocket } from '../../../src/netns/seqpacket';
import { AmbientEnv, TestPod, probeAsync, rulesetText } from '../../support/ambient-env';
import { ZtunnelStandIn } from '../../support/ztunnel-standin';

const env = new AmbientEnv({ zdsTimeouts: { ackMs: 1000 } });
let good: TestPod;
let goodRules = '';
let hostRules = '';

before(async () => {
  await env.start();
  good = await env.addPod('good');
  const r = await env.cniAdd(good);
  assert.equal(r.code, 0, r.stdout);
  await env.startNodeServer(good.nodeIp, 9999, 'direct');
  goodRules = rulesetText(good.netns.name, true);
  hostRules = rulesetText(env.node.name);
});
after(async () => {
  await env.close();
});

const noCounters = (t: string) => t.replace(/packets \d+ bytes \d+/g, '');

async function goodPodUnaffected(): Promise<void> {
  assert.equal(noCounters(rulesetText(good.netns.name, true)), noCounters(goodRules), "the good pod's rules are untouched (same rules, same handles)");
  assert.equal(env.redirection(good), 'enabled');
  assert.ok(env.standIn.workloads.has(good.uid));
  const out = await probeAsync(good.netns.name, good.nodeIp, 9999);
  assert.equal(out.label, 'ztunnel-outbound', JSON.stringify(out));
}

function post(body: string | Buffer, method = 'POST'): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: path.join(env.runDir, 'pluginevent.sock'), path: '/cmdadd', method, headers: { Host: 'unix' } }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('malformed CNI events are answered 400 (405 for GET) and change nothing', async () => {
  for (const [body, re] of [
    ['', /empty request body/],
    ['{not json', /not JSON/],
    ['[1,2]', /expected a JSON object/],
    [JSON.stringify({ Netns: 'relative/path', PodName: 'good', PodNamespace: 'shop' }), /absolute path/],
    [JSON.stringify({ Netns: '/run/netns/../../etc/passwd', PodName: 'good', PodNamespace: 'shop' }), /without "\.\."/],
    [JSON.stringify({ Netns: '/x', PodName: 'good', PodNamespace: 'shop', IPs: [{ Address: { IP: '10.0.0.300' } }] }), /not an IP address/],
    [Buffer.alloc(2 << 20, 0x20), /larger than/],
  ] as const) {
    const r = await post(body);
    assert.equal(r.status, 400, `${String(body).slice(0, 60)}: ${r.text}`);
    assert.match(r.text, re);
  }
  assert.equal((await post('', 'GET')).status, 405);
  assert.ok(env.log.has('error', /failed to process CNI event payload/));
  await goodPodUnaffected();
});

test('an event for a netns that does not exist: 500 naming it, the pod is not enrolled', async () => {
  const p = await env.addPod('ghost');
  await assert.rejects(
    postCniAddEvent(path.join(env.runDir, 'pluginevent.sock'), {
      netns: '/run/netns/icts-does-not-exist',
      podName: p.name,
      podNamespace: p.namespace,
      ips: [],
    }),
    /status code 500.*icts-does-not-exist.*does not exist/s,
  );
  assert.equal(env.standIn.workloads.has(p.uid), false);
  assert.equal(env.redirection(p), undefined);
  assert.equal(env.agent!.parts().cache.has(p.uid), false);
  await goodPodUnaffected();
});

test('an event for a pod that is not in the mesh (plain namespace) is refused', async () => {
  const p = await env.addPod('plain-pod', {}, 'plain');
  await assert.rejects(
    postCniAddEvent(path.join(env.runDir, 'pluginevent.sock'), { netns: p.netns.path, podName: p.name, podNamespace: p.namespace, ips: [] }),
    /not eligible for ambient enrollment/,
  );
  assert.doesNotMatch(rulesetText(p.netns.name), /istio-ambient/);
  await goodPodUnaffected();
});

test('a virtual-interface annotation with nft syntax: ADD fails naming the annotation, no rule anywhere is touched', async () => {
  const p = await env.addPod('evil', {}, 'shop', { 'istio.io/reroute-virtual-interfaces': 'eth1 ; flush ruleset ; add table ip x' });
  const r = await env.cniAdd(p);
  assert.notEqual(r.code, 0);
  const err = JSON.parse(r.stdout);
  assert.equal(err.code, 108);
  assert.match(err.details, /istio\.io\/reroute-virtual-interfaces/);
  assert.doesNotMatch(rulesetText(p.netns.name), /istio-ambient|table ip x/);
  assert.equal(noCounters(rulesetText(env.node.name)), noCounters(hostRules), 'host rules and probe set unchanged');
  assert.equal(env.standIn.workloads.has(p.uid), false);
  assert.ok(env.log.has('error', /not retried/));
  await goodPodUnaffected();
});

test('ZDS: a second client sending garbage is dropped; the connected ztunnel keeps serving', async () => {
  const rogue = SeqpacketSocket.connect(env.zdsPath);
  await rogue.send(Buffer.from('definitely not protobuf \xff\xff\xff'));
  const eof = await rogue.recv({ maxBytes: 64, timeoutMs: 7000 });
  assert.equal(eof.data.length, 0, 'the agent closed it');
  rogue.close();
  const p = await env.addPod('after-rogue');
  const r = await env.cniAdd(p);
  assert.equal(r.code, 0, r.stdout);
  assert.ok(env.standIn.workloads.has(p.uid));
  await goodPodUnaffected();
});

test('ZDS: a client that never acks takes the newest slot, its Add times out, it is dropped, the pod is enrolled on retry', async () => {
  // It acks its snapshot, then goes quiet.
  const silent: ZtunnelStandIn = new ZtunnelStandIn(env.zdsPath, { ack: (r) => (r.kind === 'add' && silent.snapshots.length > 0 ? 'never' : '') });
  try {
    await silent.connect();
    await silent.waitFor(() => silent.snapshots.length === 1, 5000, 'silent client snapshot');
    const zds = env.agent!.parts().zds;
    const deadline = Date.now() + 5000;
    while (zds.connections < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const p = await env.addPod('victim');
    const r = await env.cniAdd(p);
    assert.notEqual(r.code, 0, 'ADD fails: no ack within the deadline');
    assert.match(JSON.parse(r.stdout).details, /no ack/);
    await silent.waitFor(() => silent.disconnectedByAgent, 5000, 'the agent dropping the silent client');
    const end = Date.now() + 15_000;
    while (env.redirection(p) !== 'enabled' && Date.now() < end) await new Promise((r2) => setTimeout(r2, 50));
    assert.equal(env.redirection(p), 'enabled', 'enrolled through the good ztunnel on retry');
    assert.ok(env.standIn.workloads.has(p.uid));
    await goodPodUnaffected();
  } finally {
    silent.close();
  }
});
