// Ambient's effects through the dataplane port, over its fake: the in-pod rules and mark routing
// of an enrolled pod (netnsPodRules), and the host's probe sets kept in place across an agent
// restart (HostProbeSets), as the kernel would keep them.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { parseAmbientConfig, parseHostRuleParams, parsePodOverrides } from '../../src/ambient/config';
import { POD_TABLE_REFS } from '../../src/ambient/tables';
import { HostProbeSets } from '../../src/agent/ambient/host-probes';
import { netnsPodRules } from '../../src/agent/ambient';
import { MemoryLogger } from '../../src/log/logger';
import { parseIp } from '../../src/net/ip';
import { FakeDataplane, FakeNetns } from '../../src/netns/fake-port';
import { ambientRoutePlan } from '../../src/netns/route-plan';

const POD = '/host/proc/4242/ns/net';
const HOST = '/proc/1/ns/net';
const ip = (s: string) => parseIp(s)!;
const UID1 = '00000000-0000-4000-8000-000000000001';
const UID2 = '00000000-0000-4000-8000-000000000002';

test('in-pod rules: the three tables and the mark routing; a pod that drops DNS capture loses the raw table; removal takes both', async () => {
  const port = new FakeDataplane(POD_TABLE_REFS);
  const cfg = parseAmbientConfig({ enableIPv6: true, redirectDNS: true });
  const rules = netnsPodRules(cfg, new MemoryLogger(), port);
  const ns = new FakeNetns(POD);
  await rules.apply(ns, parsePodOverrides({}));
  assert.deepEqual(
    port
      .at(POD)
      .tables()
      .map((t) => t.table),
    ['istio-ambient-nat', 'istio-ambient-mangle', 'istio-ambient-raw'],
  );
  assert.deepEqual(port.routes, [{ netns: POD, plan: ambientRoutePlan(true) }]);
  assert.deepEqual(port.routes[0].plan, { kind: 'ambient', ipv6: true, mark: 0x111, mask: 0xfff, table: 100, priority: 32764 });

  // Re-applied with DNS capture off for this pod: the raw table it no longer needs is deleted.
  await rules.apply(ns, parsePodOverrides({ dnsProxy: 'PodDNSDisabled' }));
  assert.match(port.applied[1].sent, /^delete table inet istio-ambient-raw$/m);
  assert.ok(
    !port
      .at(POD)
      .tables()
      .some((t) => t.table === 'istio-ambient-raw'),
  );

  await rules.remove(ns);
  assert.equal(port.at(POD).dump(), '');
  assert.deepEqual(port.routesRemoved, [{ netns: POD, routes: ambientRoutePlan(true) }]);
});

test('in-pod removal: tables that cannot be deleted are logged, and the routes still go', async () => {
  const port = new FakeDataplane(POD_TABLE_REFS);
  const log = new MemoryLogger();
  const rules = netnsPodRules(parseAmbientConfig({}), log, port);
  port.failRemove = new Error('nft said no');
  await rules.remove(new FakeNetns(POD));
  assert.ok(log.has('warn', /in-pod tables not deleted/));
  assert.equal(port.routesRemoved.length, 1);
});

test('host probe sets: set up in place, addresses owned by UID, kept across a restart, destroyed whole', async () => {
  const port = new FakeDataplane();
  const host = new FakeNetns(HOST);
  const cfg = parseAmbientConfig({ enableIPv6: true });
  const params = parseHostRuleParams({ kubeletUID: '0' });
  const sets = new HostProbeSets(cfg, params, port, host, new MemoryLogger());
  await sets.setup();
  await sets.add(UID1, [ip('10.0.0.1'), ip('fd00::1')]);
  await sets.add(UID2, [ip('10.0.0.2')]);
  await sets.remove(UID2, [ip('10.0.0.1')]); // not UID2's: stays
  assert.deepEqual(port.at(HOST).elements('inet', 'istio-ambient-nat', 'istio-inpod-probes-v4'), [
    { key: ['10.0.0.1'], comment: UID1 },
    { key: ['10.0.0.2'], comment: UID2 },
  ]);
  assert.equal(port.applied.length, 0, 'the host table is never replaced: its elements must survive');

  // A new agent: setup again keeps the elements, and the mirror is read back from them.
  const again = new HostProbeSets(cfg, params, port, host, new MemoryLogger());
  await again.setup();
  assert.deepEqual(
    again.entries(),
    new Map([
      ['10.0.0.1', UID1],
      ['fd00::1', UID1],
      ['10.0.0.2', UID2],
    ]),
  );
  assert.match(port.at(HOST).dump(), /add rule inet istio-ambient-nat postrouting .*@istio-inpod-probes-v4/);

  await again.destroy();
  assert.equal(port.at(HOST).dump(), '');
});
