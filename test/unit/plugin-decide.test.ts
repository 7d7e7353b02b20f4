// The decisions upstream makes on ADD: pass-through before any API access, then every skip rule.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { parseCniArgs } from '../../src/cni/args';
import { parsePluginConfig } from '../../src/plugin/config';
import { earlyDecision, sidecarSkipReason } from '../../src/plugin/decide';
import { extractPodInfo } from '../../src/redirect';
import { sidecarPod } from '../support/cni-fakes';

const pc = parsePluginConfig({ pod_namespace: 'istio-system', exclude_namespaces: ['kube-system'] });
const args = (ns: string, name: string) => parseCniArgs(`K8S_POD_NAMESPACE=${ns};K8S_POD_NAME=${name}`);

test('own agent pod: istio-cni-node-* in pod_namespace passes through', () => {
  assert.deepEqual(earlyDecision(pc, args('istio-system', 'istio-cni-node-x7k2p')), { pass: true, reason: 'own-agent-pod' });
  assert.deepEqual(earlyDecision(pc, args('default', 'istio-cni-node-x7k2p')), { pass: false });
  assert.deepEqual(earlyDecision(pc, args('istio-system', 'istiod-1')), { pass: false });
});

test('not a Kubernetes pod: empty name or namespace passes through', () => {
  assert.deepEqual(earlyDecision(pc, parseCniArgs('')), { pass: true, reason: 'not-kubernetes' });
  assert.deepEqual(earlyDecision(pc, parseCniArgs('K8S_POD_NAME=x')), { pass: true, reason: 'not-kubernetes' });
});

test('excluded namespace passes through', () => {
  assert.deepEqual(earlyDecision(pc, args('kube-system', 'coredns-1')), { pass: true, reason: 'excluded-namespace' });
});

const skip = (over: Parameters<typeof sidecarPod>[0]) => sidecarSkipReason(extractPodInfo(sidecarPod(over)));

test('an injected sidecar pod is captured', () => {
  assert.equal(skip({}), undefined);
  assert.equal(skip({ proxyAsInit: true }), undefined, 'native sidecar (istio-proxy as an init container)');
  assert.equal(skip({ args: [] }), undefined, 'no proxy args');
  assert.equal(skip({ labels: { 'sidecar.istio.io/inject': 'true' } }), undefined);
});

test('istio-init present (init or regular container) -> skip', () => {
  assert.equal(skip({ initContainers: ['istio-init'] }), 'istio-init-present');
  const pod = sidecarPod();
  pod.spec!.containers!.push({ name: 'istio-init' });
  assert.equal(sidecarSkipReason(extractPodInfo(pod)), 'istio-init-present');
});

test('DISABLE_ENVOY true on istio-proxy -> skip; false or unparsable does not', () => {
  for (const v of ['true', '1', 'T', 'TRUE']) assert.equal(skip({ env: [{ name: 'DISABLE_ENVOY', value: v }] }), 'envoy-disabled', v);
  for (const v of ['false', '0', 'yes', '']) assert.equal(skip({ env: [{ name: 'DISABLE_ENVOY', value: v }] }), undefined, v);
});

test('no istio-proxy container -> skip', () => {
  const pod = sidecarPod();
  pod.spec!.containers = [{ name: 'app' }];
  assert.equal(sidecarSkipReason(extractPodInfo(pod)), 'no-istio-proxy');
});

test('proxy type other than sidecar -> skip', () => {
  assert.equal(skip({ args: ['proxy', 'router'] }), 'not-a-sidecar');
  assert.equal(skip({ args: ['proxy', 'sidecar', '--x'] }), undefined);
  assert.equal(skip({ args: ['other', 'router'] }), undefined, 'args[0] must be "proxy"');
});

test('inject false: the label beats the annotation; unparsable values are ignored', () => {
  assert.equal(skip({ annotations: { 'sidecar.istio.io/inject': 'false' } }), 'injection-disabled');
  assert.equal(skip({ labels: { 'sidecar.istio.io/inject': 'false' } }), 'injection-disabled');
  assert.equal(skip({ labels: { 'sidecar.istio.io/inject': 'true' }, annotations: { 'sidecar.istio.io/inject': 'false' } }), undefined);
  assert.equal(skip({ labels: { 'sidecar.istio.io/inject': 'false' }, annotations: { 'sidecar.istio.io/inject': 'true' } }), 'injection-disabled');
  assert.equal(skip({ annotations: { 'sidecar.istio.io/inject': 'nope' } }), undefined);
  // A present-but-empty label still wins (and, being empty, decides nothing).
  assert.equal(skip({ labels: { 'sidecar.istio.io/inject': '' }, annotations: { 'sidecar.istio.io/inject': 'false' } }), undefined);
});

test('missing sidecar.istio.io/status -> skip', () => {
  const pod = sidecarPod();
  delete pod.metadata!.annotations!['sidecar.istio.io/status'];
  assert.equal(sidecarSkipReason(extractPodInfo(pod)), 'no-sidecar-status');
});

test('rules apply in upstream order', () => {
  const pod = sidecarPod({ initContainers: ['istio-init'], env: [{ name: 'DISABLE_ENVOY', value: 'true' }], args: ['proxy', 'router'] });
  assert.equal(sidecarSkipReason(extractPodInfo(pod)), 'istio-init-present');
  assert.equal(skip({ env: [{ name: 'DISABLE_ENVOY', value: 'true' }], args: ['proxy', 'router'] }), 'envoy-disabled');
});
