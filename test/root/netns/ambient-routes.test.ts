// The in-pod policy routing ambient enrollment adds: fwmark 0x111/0xfff -> table 100 (pref 32764)
// and `local default dev lo` in table 100, per family, idempotent, removable, in a real netns.
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { configureAmbientRoutesIn, loopbackIPv6Disabled, removeAmbientRoutesIn } from '../../../src/netns/ambient-routes';
import { ambientRoutePlan } from '../../../src/netns/route-plan';
import { Netns, makeNetns, removeAllNetns, requireRootAndTools, threadNetns } from './addon-support';

let selfNetns: string;
before(() => {
  requireRootAndTools();
  selfNetns = threadNetns().process;
});
after(() => {
  removeAllNetns();
  assert.equal(threadNetns().process, selfNetns, 'the test process stays in its own netns');
});

const ip = (ns: Netns, ...args: string[]) => execFileSync('ip', ['-n', ns.name, ...args], { encoding: 'utf8' });
const markRules = (ns: Netns, family: '-4' | '-6') =>
  ip(ns, family, 'rule', 'show')
    .split('\n')
    .filter((l) => /fwmark 0x111\/0xfff lookup 100/.test(l));
/** Table 100's routes; '' when the table does not exist (ip -6 says so with an error). */
function table100(ns: Netns, family: '-4' | '-6'): string {
  const r = spawnSync('ip', ['-n', ns.name, family, 'route', 'show', 'table', '100'], { encoding: 'utf8' });
  if (r.status !== 0 && /FIB table does not exist/.test(r.stderr)) return '';
  if (r.status !== 0) throw new Error(`ip route show table 100: ${r.stderr}`);
  return r.stdout.trim();
}

test('IPv4 only: one mark rule at pref 32764 and the local default route; nothing for IPv6; idempotent', async () => {
  const ns = makeNetns();
  await configureAmbientRoutesIn(ns.path, ambientRoutePlan(false));
  await configureAmbientRoutesIn(ns.path, ambientRoutePlan(false));
  assert.deepEqual(markRules(ns, '-4'), ['32764:\tfrom all fwmark 0x111/0xfff lookup 100']);
  assert.match(table100(ns, '-4'), /^local default dev lo scope host\s*$/);
  assert.deepEqual(markRules(ns, '-6'), []);
  assert.equal(table100(ns, '-6'), '');
  // The route does what it is for: a packet with the mark is delivered locally.
  assert.match(ip(ns, 'route', 'get', '10.9.8.7', 'mark', '0x111'), /^local 10\.9\.8\.7 dev lo table 100/);
  assert.doesNotMatch(ip(ns, 'route', 'get', '127.0.0.2', 'mark', '0x222'), /table 100/);
});

test('IPv6 on: both families; removal takes everything and is safe to repeat', async () => {
  const ns = makeNetns();
  await configureAmbientRoutesIn(ns.path, ambientRoutePlan(true));
  await configureAmbientRoutesIn(ns.path, ambientRoutePlan(true));
  assert.equal(markRules(ns, '-4').length, 1);
  assert.deepEqual(markRules(ns, '-6'), ['32764:\tfrom all fwmark 0x111/0xfff lookup 100']);
  assert.match(table100(ns, '-6'), /^local default dev lo/);
  assert.match(ip(ns, '-6', 'route', 'get', 'fd00::5', 'mark', '0x111'), /local fd00::5 .*dev lo table 100/);

  await removeAmbientRoutesIn(ns.path);
  await removeAmbientRoutesIn(ns.path);
  assert.deepEqual(markRules(ns, '-4'), []);
  assert.deepEqual(markRules(ns, '-6'), []);
  assert.equal(table100(ns, '-4'), '');
  assert.equal(table100(ns, '-6'), '');
  // Other rules are left alone.
  assert.match(ip(ns, 'rule', 'show'), /32766:\tfrom all lookup main/);
});

test('IPv6 on but lo has IPv6 disabled: the IPv6 rule without the IPv6 route, as upstream', async () => {
  const ns = makeNetns();
  assert.equal(loopbackIPv6Disabled(ns.path), false);
  execFileSync('ip', ['netns', 'exec', ns.name, 'sysctl', '-q', '-w', 'net.ipv6.conf.lo.disable_ipv6=1']);
  assert.equal(loopbackIPv6Disabled(ns.path), true, 'read in the pod netns, not ours');
  await configureAmbientRoutesIn(ns.path, ambientRoutePlan(true));
  assert.equal(markRules(ns, '-4').length, 1);
  assert.equal(markRules(ns, '-6').length, 1);
  assert.equal(table100(ns, '-6'), '');
  assert.match(table100(ns, '-4'), /^local default dev lo/);
});

test('a missing netns is an error naming it', async () => {
  await assert.rejects(configureAmbientRoutesIn('/run/netns/icts-no-such-netns', ambientRoutePlan(false)), /icts-no-such-netns/);
  await assert.rejects(removeAmbientRoutesIn('/run/netns/icts-no-such-netns'), /icts-no-such-netns/);
});
