// applySidecarCapture over the fake port: rules then routes, the rules removed again when the
// routes fail, a re-apply leaving what a fresh apply leaves; removal with the default routing.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { CaptureApplyError, SIDECAR_TABLE_REFS, applySidecarCapture, defaultTproxyRouting, removeSidecarCapture } from '../../src/capture/apply';
import { parseCaptureConfig } from '../../src/capture/config';
import { FakeDataplane, FakeNetns } from '../../src/netns/fake-port';

const NS = '/var/run/netns/pod';
const ns = new FakeNetns(NS);
const tproxy = parseCaptureConfig({ inboundInterceptionMode: 'TPROXY', inboundPortsInclude: '*', inboundTProxyMark: '1400', inboundTProxyRouteTable: '140' });
const redirect = parseCaptureConfig({ inboundPortsInclude: '*' });

test('rules, then the routes the config needs (its own mark and table)', async () => {
  const port = new FakeDataplane(SIDECAR_TABLE_REFS);
  await applySidecarCapture(port, ns, tproxy);
  assert.match(port.nft.get(NS)!.dump(), /^add table inet istio-proxy-mangle$/m);
  assert.deepEqual(port.routes, [{ netns: NS, plan: { kind: 'sidecar', loopbackV6: false, tproxy: { mark: 1400, table: 140, ipv6: false } } }]);
});

test('routes that fail: the rules just applied go again, and the error says which step', async () => {
  const port = new FakeDataplane(SIDECAR_TABLE_REFS);
  port.failRoutes = new Error('RTNETLINK answers: Operation not permitted');
  await assert.rejects(applySidecarCapture(port, ns, tproxy), (e) => {
    assert.ok(e instanceof CaptureApplyError);
    assert.equal(e.stage, 'routes');
    assert.match(e.message, /Operation not permitted/);
    return true;
  });
  assert.equal(port.nft.get(NS)!.dump(), '');
});

test('rules that fail: no routes are attempted', async () => {
  const port = new FakeDataplane(SIDECAR_TABLE_REFS);
  port.failApply = new Error('nft said no');
  await assert.rejects(applySidecarCapture(port, ns, tproxy), (e) => e instanceof CaptureApplyError && e.stage === 'rules');
  assert.deepEqual(port.routes, []);
});

test('TPROXY then REDIRECT in one netns: exactly what a fresh REDIRECT apply leaves', async () => {
  const port = new FakeDataplane(SIDECAR_TABLE_REFS);
  await applySidecarCapture(port, ns, tproxy);
  await applySidecarCapture(port, ns, redirect);
  assert.match(port.applied[1].sent, /^delete table inet istio-proxy-mangle$/m);
  const fresh = new FakeDataplane(SIDECAR_TABLE_REFS);
  await applySidecarCapture(fresh, ns, redirect);
  assert.equal(port.nft.get(NS)!.dump(), fresh.nft.get(NS)!.dump());
});

test("removal: the tables present and the default TPROXY routing (the capture flags' defaults)", async () => {
  assert.deepEqual(defaultTproxyRouting(), { mark: 1337, table: 133 });
  const port = new FakeDataplane(SIDECAR_TABLE_REFS);
  await applySidecarCapture(port, ns, tproxy);
  await removeSidecarCapture(port, ns);
  assert.equal(port.nft.get(NS)!.dump(), '');
  assert.deepEqual(port.routesRemoved, [{ netns: NS, routes: { kind: 'sidecar', mark: 1337, table: 133 } }]);
  await removeSidecarCapture(port, ns); // nothing there: no error
});
