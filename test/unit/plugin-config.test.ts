import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { CniError } from '../../src/cni/errors';
import { parsePluginConfig } from '../../src/plugin/config';

test('defaults when the keys are absent', () => {
  assert.deepEqual(parsePluginConfig({ cniVersion: '1.0.0', name: 'n', type: 'istio-cni' }), {
    logLevel: 'info',
    agentRunDir: '/var/run/istio-cni',
    ambientEnabled: false,
    enablementSelectors: [],
    excludeNamespaces: [],
    podNamespace: '',
    nativeNftables: false,
    enableAmbientDetectionRetry: false,
    kubernetes: {},
    podLookup: { attempts: 30, intervalMs: 1000 },
  });
});

test('the config install-cni writes, with ipam/dns and the legacy kubernetes block', () => {
  const pc = parsePluginConfig({
    type: 'istio-cni',
    name: 'istio-cni',
    ipam: {},
    dns: {},
    plugin_log_level: 'debug',
    cni_agent_run_dir: '/run/x',
    ambient_enabled: true,
    enablement_selectors: [
      { podSelector: { matchLabels: { 'istio.io/dataplane-mode': 'ambient' } } },
      {
        podSelector: { matchExpressions: [{ key: 'istio.io/dataplane-mode', operator: 'NotIn', values: ['none'] }] },
        namespaceSelector: { matchLabels: { 'istio.io/dataplane-mode': 'ambient' } },
      },
    ],
    exclude_namespaces: ['kube-system', 'istio-system'],
    pod_namespace: 'istio-system',
    native_nftables: true,
    enable_ambient_detection_retry: true,
    kubernetes: { k8s_api_root: 'APIRoot', kubeconfig: 'ignored', intercept_type: 'iptables' },
  });
  assert.equal(pc.logLevel, 'debug');
  assert.equal(pc.agentRunDir, '/run/x');
  assert.equal(pc.ambientEnabled, true);
  assert.equal(pc.enablementSelectors.length, 2);
  assert.deepEqual(pc.enablementSelectors[0].namespaceSelector, { matchLabels: {}, matchExpressions: [] });
  assert.deepEqual(pc.enablementSelectors[1].podSelector.matchExpressions, [{ key: 'istio.io/dataplane-mode', operator: 'NotIn', values: ['none'] }]);
  assert.deepEqual(pc.excludeNamespaces, ['kube-system', 'istio-system']);
  assert.equal(pc.podNamespace, 'istio-system');
  assert.equal(pc.nativeNftables, true);
  assert.equal(pc.enableAmbientDetectionRetry, true);
  assert.equal(pc.kubernetes.k8s_api_root, 'APIRoot');
});

test('null is "not set" and keys match case-insensitively, as Go reads them', () => {
  const pc = parsePluginConfig({ exclude_namespaces: null, Plugin_Log_Level: 'WARN', AMBIENT_ENABLED: true, cni_agent_run_dir: '' });
  assert.deepEqual(pc.excludeNamespaces, []);
  assert.equal(pc.logLevel, 'warn');
  assert.equal(pc.ambientEnabled, true);
  assert.equal(pc.agentRunDir, '/var/run/istio-cni', 'empty means the default');
});

test('our retry keys: pod_lookup_attempts and pod_lookup_interval_ms', () => {
  assert.deepEqual(parsePluginConfig({ pod_lookup_attempts: 3, pod_lookup_interval_ms: 10 }).podLookup, { attempts: 3, intervalMs: 10 });
});

test('wrong types and values are code 7 naming the key', () => {
  const bad: [Record<string, unknown>, string][] = [
    [{ ambient_enabled: 'true' }, 'ambient_enabled'],
    [{ native_nftables: 1 }, 'native_nftables'],
    [{ enable_ambient_detection_retry: 'yes' }, 'enable_ambient_detection_retry'],
    [{ plugin_log_level: 'verbose' }, 'plugin_log_level'],
    [{ plugin_log_level: 3 }, 'plugin_log_level'],
    [{ cni_agent_run_dir: 'relative/dir' }, 'cni_agent_run_dir'],
    [{ cni_agent_run_dir: ['/x'] }, 'cni_agent_run_dir'],
    [{ exclude_namespaces: 'kube-system' }, 'exclude_namespaces'],
    [{ exclude_namespaces: ['a', 1] }, 'exclude_namespaces'],
    [{ pod_namespace: {} }, 'pod_namespace'],
    [{ enablement_selectors: {} }, 'enablement_selectors'],
    [{ enablement_selectors: ['x'] }, 'enablement_selectors[0]'],
    [{ enablement_selectors: [{ podSelector: { matchLabels: { a: 1 } } }] }, 'enablement_selectors[0].podSelector.matchLabels'],
    [
      { enablement_selectors: [{ podSelector: { matchExpressions: [{ key: 'a', operator: 'Like' }] } }] },
      'enablement_selectors[0].podSelector.matchExpressions[0].operator',
    ],
    [
      { enablement_selectors: [{ namespaceSelector: { matchExpressions: [{ key: 'a', operator: 'In', values: [] }] } }] },
      'enablement_selectors[0].namespaceSelector.matchExpressions[0].values',
    ],
    [{ enablement_selectors: [{ podSelector: { matchExpressions: [{ key: 'a', operator: 'Exists', values: ['x'] }] } }] }, 'values'],
    [{ kubernetes: 'x' }, 'kubernetes'],
    [{ pod_lookup_attempts: 0 }, 'pod_lookup_attempts'],
    [{ pod_lookup_interval_ms: 1.5 }, 'pod_lookup_interval_ms'],
  ];
  for (const [obj, key] of bad) {
    assert.throws(
      () => parsePluginConfig(obj),
      (e: CniError) => {
        assert.equal(e.code, 7);
        assert.ok(e.msg.includes(key) || e.details.includes(key), `${key}: ${e.message}`);
        return true;
      },
      JSON.stringify(obj),
    );
  }
});
