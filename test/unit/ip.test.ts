import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { formatPrefix, parseIPv4, parseIPv6, parsePrefix } from '../../src/net/ip';

test('prefixes print as Go netip does: host bits kept, RFC 5952 IPv6', () => {
  const cases: [string, string][] = [
    ['10.0.0.1/8', '10.0.0.1/8'],
    ['2001:0db8:0000:0000:0000:0000:0000:0001/64', '2001:db8::1/64'],
    ['::ffff:127.0.0.1/128', '::ffff:127.0.0.1/128'],
    ['::127.0.0.53/128', '::7f00:35/128'],
    ['fd00:0:0:1:0:0:0:0/64', 'fd00:0:0:1::/64'],
    ['1:0:0:2:0:0:0:3/128', '1:0:0:2::3/128'],
    ['1:0:0:2:0:0:3:4/128', '1::2:0:0:3:4/128'],
    ['::/0', '::/0'],
    ['FE80::A/10', 'fe80::a/10'],
  ];
  for (const [input, want] of cases) assert.equal(formatPrefix(parsePrefix(input)!), want, input);
});

test('bad addresses and prefixes are refused', () => {
  for (const bad of ['010.0.0.1', '1.2.3', '256.0.0.1', '1.2.3.4.5', ' 1.2.3.4']) assert.equal(parseIPv4(bad), undefined, bad);
  for (const bad of ['1::2::3', '12345::', 'fe80::1%eth0', ':::', '1:2:3:4:5:6:7:8:9', 'g::1']) assert.equal(parseIPv6(bad), undefined, bad);
  for (const bad of ['10.0.0.0/33', '10.0.0.0', '::/129', '10.0.0.0/08', '10.0.0.0/-1']) assert.equal(parsePrefix(bad), undefined, bad);
});
