import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { parseCniArgs } from '../../src/cni/args';
import { CniError } from '../../src/cni/errors';

test('containerd and CRI-O style CNI_ARGS yield the pod identity, in any order', () => {
  const a = parseCniArgs('IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1');
  assert.deepEqual(a, { podName: 'web-1', podNamespace: 'shop', podUid: 'u-1', infraContainerId: 'abc', ignoreUnknown: true, unknown: [] });
  const b = parseCniArgs('K8S_POD_UID=u-1;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_NAMESPACE=shop');
  assert.equal(b.podName, 'web-1');
  assert.equal(b.podNamespace, 'shop');
  assert.equal(b.ignoreUnknown, false);
});

test('empty CNI_ARGS: no pod identity', () => {
  assert.deepEqual(parseCniArgs(''), { podName: '', podNamespace: '', podUid: '', infraContainerId: '', ignoreUnknown: false, unknown: [] });
});

test('unknown keys: an error unless IgnoreUnknown is true (wherever it appears)', () => {
  assert.throws(
    () => parseCniArgs('FOO=bar;K8S_POD_NAME=x'),
    (e: CniError) => e.code === 4 && /FOO=bar/.test(e.details),
  );
  for (const t of ['1', 'true', 'TRUE', 'True']) {
    assert.deepEqual(parseCniArgs(`FOO=bar;IgnoreUnknown=${t}`).unknown, ['FOO=bar']);
  }
  assert.throws(() => parseCniArgs('IgnoreUnknown=0;FOO=bar'), CniError);
  assert.throws(
    () => parseCniArgs('IgnoreUnknown=yes'),
    (e: CniError) => e.code === 4 && /IgnoreUnknown/.test(e.details),
  );
  // Keys are case-sensitive, as in libcni.
  assert.throws(() => parseCniArgs('k8s_pod_name=x'), CniError);
});

test('malformed pairs are code 4 naming the pair', () => {
  for (const bad of ['K8S_POD_NAME', 'K8S_POD_NAME=a=b', 'K8S_POD_NAME=a;', ';K8S_POD_NAME=a', 'a;;b']) {
    assert.throws(
      () => parseCniArgs(bad),
      (e: CniError) => e.code === 4 && e.msg === 'invalid CNI_ARGS',
      bad,
    );
  }
});

test('later pairs win; empty values are allowed', () => {
  assert.equal(parseCniArgs('K8S_POD_NAME=a;K8S_POD_NAME=b').podName, 'b');
  assert.equal(parseCniArgs('K8S_POD_NAME=').podName, '');
});
