import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { isDualStack } from '../../../src/netns/dualstack';
import { configureRoutesIn } from '../../../src/netns/tproxy-routes';
import { currentNetnsId } from '../../../src/netns/nft';
import { requireRootAndTools } from '../../support/root';
import { Topology, makeTopology } from '../../support/topology';

let t: Topology;
before(() => {
  requireRootAndTools('ip');
  t = makeTopology('dual', false);
});
after(() => t?.remove());

test('dual-stack means a global IPv6 address on a non-loopback interface', async () => {
  const self = currentNetnsId();
  // IPv4 plus a link-local IPv6 address (the veth's own) is not dual-stack.
  assert.equal(await isDualStack(t.pod.path), false);
  // ::6 on lo (what TPROXY routing adds) does not count either.
  await configureRoutesIn(t.pod.path, { kind: 'sidecar', loopbackV6: true });
  assert.match(execFileSync('ip', ['-n', t.pod.name, '-6', 'addr', 'show', 'dev', 'lo'], { encoding: 'utf8' }), /::6\/128/);
  assert.equal(await isDualStack(t.pod.path), false);
  execFileSync('ip', ['-n', t.pod.name, 'addr', 'add', 'fd00:99::2/64', 'dev', 'eth0', 'nodad']);
  assert.equal(await isDualStack(t.pod.path), true);
  assert.equal(currentNetnsId(), self, 'the test process stays in its own netns');
});

test('a missing netns is a clear error', async () => {
  await assert.rejects(isDualStack('/run/netns/icts-does-not-exist'), /icts-does-not-exist/);
});

test('if_inet6 lines: scope, DAD failure and the loopback device decide', async () => {
  const { hasGlobalIPv6 } = await import('../../../src/netns/dualstack');
  const line = (ifindex: string, scope: string, flags: string, name: string) => `fd009900000000000000000000000002 ${ifindex} 40 ${scope} ${flags} ${name}\n`;
  assert.equal(hasGlobalIPv6(''), false);
  assert.equal(hasGlobalIPv6(line('02', '00', '80', 'eth0')), true, 'global, permanent');
  assert.equal(hasGlobalIPv6(line('02', '00', '40', 'eth0')), true, 'global, tentative (rtnetlink lists it too)');
  assert.equal(hasGlobalIPv6(line('02', '00', '08', 'eth0')), false, 'DAD failed');
  assert.equal(hasGlobalIPv6(line('02', '20', '80', 'eth0')), false, 'link-local');
  assert.equal(hasGlobalIPv6(line('02', '40', '80', 'eth0')), false, 'site-local');
  assert.equal(hasGlobalIPv6(line('01', '00', '80', 'lo')), false, '::6 and the like on the loopback device');
  assert.equal(hasGlobalIPv6(line('01', '10', '80', 'lo') + line('0a', '00', '80', 'net1')), true, 'a second interface');
});
