// Real traffic through rules applied by `istio-cni-ts init`: a pod netns wired to a peer netns
// by a veth pair, probe servers standing in for Envoy (UID 1337), the app and the outside world.
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { requireRootAndTools } from '../../support/root';
import { PEER2_V4, PEER2_V6, PEER_V4, PEER_V6, POD_V4, POD_V6, Topology, cli, makeTopology, probe, startServer } from '../../support/topology';

const PROXY_UID = 1337;

function init(t: Topology, args: string[]): void {
  const r = cli(['init', '--netns', t.pod.path, ...args]);
  assert.equal(r.status, 0, `init ${args.join(' ')}: ${r.stderr}`);
}

function rulesetText(ns: string): string {
  return execFileSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'ruleset'], { encoding: 'utf8' });
}

for (const family of [4, 6] as const) {
  const v6 = family === 6;
  const POD = v6 ? POD_V6 : POD_V4;
  const PEER = v6 ? PEER_V6 : PEER_V4;
  const PEER2 = v6 ? PEER2_V6 : PEER2_V4;
  const ANY = v6 ? '::' : '0.0.0.0';

  describe(`REDIRECT capture, IPv${family}${v6 ? ' (dual-stack pod)' : ''}`, () => {
    let t: Topology;
    before(async () => {
      requireRootAndTools('ip', 'nft', 'setpriv');
      t = makeTopology(`redir${family}`, v6);
      await Promise.all([
        startServer(t, t.pod.name, ANY, 15001, 'tcp', 'envoy-outbound', PROXY_UID),
        startServer(t, t.pod.name, ANY, 15006, 'tcp', 'envoy-inbound', PROXY_UID),
        startServer(t, t.pod.name, ANY, 9091, 'tcp', 'app-9091'),
        startServer(t, t.peer.name, ANY, 8080, 'tcp', 'peer-8080'),
        startServer(t, t.peer.name, ANY, 7070, 'tcp', 'peer-7070'),
      ]);
      init(t, ['-i', '*', '-x', `${PEER2}/${v6 ? 128 : 32}`, '-b', '*', '-d', '9091', '-o', '7070']);
    });
    after(() => t?.remove());

    test('IPv6 rules exist only in the dual-stack pod', () => {
      assert.equal(/ip6 /.test(rulesetText(t.pod.name)), v6);
    });

    test('outbound from the app lands on 15001 with the original destination', () => {
      const r = probe(t.pod.name, PEER, 8080);
      assert.equal(r.label, 'envoy-outbound', JSON.stringify(r));
      assert.deepEqual({ address: r.origDst?.address, port: r.origDst?.port }, { address: PEER, port: 8080 });
    });

    test('traffic from the proxy UID is not redirected', () => {
      const r = probe(t.pod.name, PEER, 8080, { uid: PROXY_UID });
      assert.equal(r.label, 'peer-8080', JSON.stringify(r));
    });

    test('an excluded outbound port and an excluded CIDR go straight out', () => {
      assert.equal(probe(t.pod.name, PEER, 7070).label, 'peer-7070');
      assert.equal(probe(t.pod.name, PEER2, 8080).label, 'peer-8080');
    });

    test('inbound to a pod port lands on 15006 with the original destination', () => {
      const r = probe(t.peer.name, POD, 9090);
      assert.equal(r.label, 'envoy-inbound', JSON.stringify(r));
      assert.deepEqual({ address: r.origDst?.address, port: r.origDst?.port }, { address: POD, port: 9090 });
    });

    test('an excluded inbound port reaches the app directly', () => {
      assert.equal(probe(t.peer.name, POD, 9091).label, 'app-9091');
    });

    test('re-applying a narrower config replaces the rules whole', () => {
      init(t, ['-i', `${PEER}/${v6 ? 128 : 32}`, '-b', '']);
      const text = rulesetText(t.pod.name);
      assert.doesNotMatch(text, /jump istio-inbound/, 'no inbound capture left behind');
      assert.doesNotMatch(text, /dport 7070/, 'no outbound port exclusion left behind');
      assert.equal(probe(t.pod.name, PEER, 8080).label, 'envoy-outbound', 'included CIDR still captured');
      assert.equal(probe(t.pod.name, PEER2, 8080).label, 'peer-8080', 'other CIDRs are not');
      assert.equal(probe(t.peer.name, POD, 9091).label, 'app-9091');
    });

    test('running init twice is harmless and cleanup removes everything', () => {
      init(t, ['-i', '*', '-b', '*']);
      const once = rulesetText(t.pod.name);
      init(t, ['-i', '*', '-b', '*']);
      assert.equal(rulesetText(t.pod.name), once);
      init(t, ['--cleanup']);
      assert.doesNotMatch(rulesetText(t.pod.name), /istio-proxy/);
      init(t, ['--cleanup']);
      assert.equal(probe(t.pod.name, PEER, 8080).label, 'peer-8080', 'nothing redirected after cleanup');
    });
  });

  describe(`TPROXY inbound, IPv${family}`, () => {
    let t: Topology;
    before(async () => {
      requireRootAndTools('ip', 'nft', 'setpriv');
      t = makeTopology(`tproxy${family}`, v6);
      // Envoy's inbound listener is transparent: it accepts connections for any local address.
      await startServer(t, t.pod.name, ANY, 15006, 'tproxy', 'envoy-tproxy');
      init(t, ['-m', 'TPROXY', '-b', '*', '-i', '']);
    });
    after(() => t?.remove());

    test('the connection arrives with the original destination address intact', () => {
      const r = probe(t.peer.name, POD, 9090);
      assert.equal(r.label, 'envoy-tproxy', JSON.stringify(r));
      assert.deepEqual(r.local, { address: POD, port: 9090 });
    });

    test('the mark rule and local route are in place, and cleanup removes them', () => {
      const fam = v6 ? '-6' : '-4';
      const rules = execFileSync('ip', ['-n', t.pod.name, fam, 'rule'], { encoding: 'utf8' });
      assert.match(rules, /fwmark 0x539 lookup 133/);
      const routes = execFileSync('ip', ['-n', t.pod.name, fam, 'route', 'show', 'table', '133'], { encoding: 'utf8' });
      assert.match(routes, /local default dev lo/);
      init(t, ['--cleanup']);
      assert.doesNotMatch(execFileSync('ip', ['-n', t.pod.name, fam, 'rule'], { encoding: 'utf8' }), /lookup 133/);
      assert.equal(execFileSync('ip', ['-n', t.pod.name, fam, 'route', 'show', 'table', '133'], { encoding: 'utf8' }).trim(), '');
    });
  });
}

describe('DNS redirect to 15053', () => {
  let t: Topology;
  before(async () => {
    requireRootAndTools('ip', 'nft', 'setpriv');
    t = makeTopology('dns', true);
    await Promise.all([
      startServer(t, t.pod.name, '0.0.0.0', 15053, 'udp', 'agent-dns-v4', PROXY_UID),
      startServer(t, t.pod.name, '::', 15053, 'udp', 'agent-dns-v6', PROXY_UID),
      startServer(t, t.peer.name, '0.0.0.0', 53, 'udp', 'peer-dns'),
    ]);
    init(t, ['--redirect-dns', '--capture-all-dns', '-i', '']);
  });
  after(() => t?.remove());

  test('a query to any server on port 53 reaches the agent, IPv4 and IPv6', () => {
    assert.equal(probe(t.pod.name, PEER_V4, 53, { mode: 'udp' }).label, 'agent-dns-v4');
    assert.equal(probe(t.pod.name, PEER_V6, 53, { mode: 'udp' }).label, 'agent-dns-v6');
  });

  test("the proxy's own queries go out", () => {
    assert.equal(probe(t.pod.name, PEER_V4, 53, { mode: 'udp', uid: PROXY_UID }).label, 'peer-dns');
  });
});

describe('init --run-validation', () => {
  let t: Topology;
  before(() => {
    requireRootAndTools('ip', 'nft');
    t = makeTopology('validate', false);
  });
  after(() => t?.remove());

  // Like Istio's istio-validation container, the check runs as the proxy UID after the rules are in.
  test('passes when the redirect works', () => {
    const apply = cli(['init', '-i', '*', '-b', '*'], t.pod.name);
    assert.equal(apply.status, 0, apply.stderr);
    const r = cli(['init', '-i', '*', '-b', '*', '--skip-rule-apply', '--run-validation'], t.pod.name, PROXY_UID);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /validation passed/);
  });

  test('exits 126 when nothing is redirected', () => {
    const cleanup = cli(['init', '--cleanup'], t.pod.name);
    assert.equal(cleanup.status, 0, cleanup.stderr);
    const r = cli(['init', '--skip-rule-apply', '--run-validation', '--probe-timeout', '1500ms'], t.pod.name, PROXY_UID);
    assert.equal(r.status, 126, r.stderr);
    assert.match(r.stderr, /validation failed/);
  });
});
