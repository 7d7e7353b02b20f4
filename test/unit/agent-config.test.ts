// The agent's configuration: Istio's install-cni variables, our additions, flags over env.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { PARAMS, parseAgentConfig } from '../../src/agent/config';
import { pluginConfigText } from '../../src/installer/config';
import { InputError } from '../../src/values/errors';

test('defaults match install-cni (reference 5.1) plus ours', () => {
  const c = parseAgentConfig({}, {});
  const i = c.install;
  assert.equal(i.mountedCNINetDir, '/host/etc/cni/net.d');
  assert.deepEqual(i.cniBinTargetDirs, ['/host/opt/cni/bin']);
  assert.equal(i.k8sServiceAccountPath, '/var/run/secrets/kubernetes.io/serviceaccount');
  assert.equal(i.cniAgentRunDir, '/var/run/istio-cni');
  assert.equal(i.chainedCNIPlugin, true);
  assert.equal(i.istioOwnedCNIConfig, false);
  assert.equal(i.istioOwnedCNIConfigFilename, '');
  assert.equal(i.kubeconfigMode, 0o600);
  assert.equal(i.pluginLogLevel, 'info');
  assert.equal(i.pluginType, 'istio-cni');
  assert.equal(i.excludeNamespaces, null);
  assert.deepEqual(i.enablementSelectors, []);
  assert.equal(c.monitoringPort, 15014);
  assert.equal(c.healthPort, 8000);
  assert.equal(c.ambient.ztunnelUDSAddress, '/var/run/ztunnel/ztunnel.sock');
  assert.equal(c.repair.enabled, true);
  assert.equal(c.repair.initExitCode, 126);
  assert.equal(c.repair.labelKey, 'cni.istio.io/uninitialized');
});

test('environment variables are read; flags beat them; Go boolean spellings accepted', () => {
  const env = {
    CHAINED_CNI_PLUGIN: 'F',
    CNI_BIN_DIR: '/x/bin',
    KUBECONFIG_MODE: '0640',
    EXCLUDE_NAMESPACES: ' kube-system, ,istio-system ',
    PLUGIN_LOG_LEVEL: 'debug',
    MONITORING_PORT: '-1',
    KUBERNETES_SERVICE_HOST: '10.0.0.1',
    KUBERNETES_SERVICE_PORT: '443',
  };
  const c = parseAgentConfig({ 'cni-bin-dir': '/flag/bin', 'chained-cni-plugin': 'true' }, env);
  assert.deepEqual(c.install.cniBinTargetDirs, ['/flag/bin']);
  assert.equal(c.install.chainedCNIPlugin, true);
  assert.equal(c.install.kubeconfigMode, 0o640);
  assert.deepEqual(c.install.excludeNamespaces, ['kube-system', 'istio-system']);
  assert.equal(c.install.pluginLogLevel, 'debug');
  assert.equal(c.monitoringPort, -1);
  assert.equal(c.install.k8sServiceHost, '10.0.0.1');
  assert.equal(parseAgentConfig({}, env).install.chainedCNIPlugin, false);
  assert.equal(parseAgentConfig({ 'chained-cni-plugin': '' }, env).install.chainedCNIPlugin, true, 'a bare boolean flag means true');
  assert.equal(parseAgentConfig({ 'kubeconfig-mode': '384' }, {}).install.kubeconfigMode, 0o600);
  assert.equal(parseAgentConfig({ 'kubeconfig-mode': '0o644' }, {}).install.kubeconfigMode, 0o644);
});

test('Istio-owned mode defaults its file name only when enabled', () => {
  assert.equal(parseAgentConfig({}, { ISTIO_OWNED_CNI_CONFIG: 'true' }).install.istioOwnedCNIConfigFilename, '02-istio-cni.conflist');
  assert.equal(
    parseAgentConfig({}, { ISTIO_OWNED_CNI_CONFIG: 'true', ISTIO_OWNED_CNI_CONFIG_FILENAME: '01-x.conflist' }).install.istioOwnedCNIConfigFilename,
    '01-x.conflist',
  );
});

const bad: [Record<string, string>, RegExp][] = [
  [{ CHAINED_CNI_PLUGIN: 'maybe' }, /CHAINED_CNI_PLUGIN "maybe"/],
  [{ AMBIENT_ENABLED: 'yes' }, /AMBIENT_ENABLED "yes"/],
  [{ KUBECONFIG_MODE: '0999' }, /KUBECONFIG_MODE/],
  [{ KUBECONFIG_MODE: '01777' }, /KUBECONFIG_MODE.*at most 0777/],
  [{ MONITORING_PORT: 'http' }, /MONITORING_PORT/],
  [{ MONITORING_PORT: '70000' }, /MONITORING_PORT/],
  [{ HEALTH_PORT: '-1' }, /HEALTH_PORT/],
  [{ LISTEN_ADDRESS: 'localhost' }, /LISTEN_ADDRESS "localhost".*IPv4/],
  [{ LISTEN_ADDRESS: '10.0.0.1:8000' }, /LISTEN_ADDRESS/],
  [{ PLUGIN_LOG_LEVEL: 'verbose' }, /PLUGIN_LOG_LEVEL "verbose"/],
  [{ AGENT_LOG_LEVEL: 'trace' }, /AGENT_LOG_LEVEL/],
  [{ MOUNTED_CNI_NET_DIR: 'relative/dir' }, /MOUNTED_CNI_NET_DIR.*absolute/],
  [{ CNI_CONF_NAME: '../etc/passwd' }, /CNI_CONF_NAME/],
  [{ CNI_PLUGIN_TYPE: 'istio cni' }, /CNI_PLUGIN_TYPE/],
  [{ AMBIENT_ENABLEMENT_SELECTOR: 'podSelector: {}' }, /AMBIENT_ENABLEMENT_SELECTOR.*list/],
  [{ AMBIENT_ENABLEMENT_SELECTOR: '- podSelector: {matchLabels: {a: [1]}}' }, /AMBIENT_ENABLEMENT_SELECTOR/],
  [{ AMBIENT_ENABLEMENT_SELECTOR: '- [unclosed' }, /AMBIENT_ENABLEMENT_SELECTOR.*YAML/],
  [{ REPAIR_INIT_CONTAINER_EXIT_CODE: '300' }, /REPAIR_INIT_CONTAINER_EXIT_CODE/],
  [{ KUBERNETES_SERVICE_PORT: 'https' }, /KUBERNETES_SERVICE_PORT/],
];

for (const [env, re] of bad) {
  test(`malformed ${Object.keys(env)[0]}=${JSON.stringify(Object.values(env)[0])} stops start-up naming the variable`, () => {
    assert.throws(
      () => parseAgentConfig({}, env),
      (e: unknown) => e instanceof InputError && re.test((e as Error).message),
    );
  });
}

test('a malformed flag is named as the flag', () => {
  assert.throws(() => parseAgentConfig({ 'skip-tls-verify': 'sure' }, {}), /--skip-tls-verify "sure"/);
});

test('unused chart variables are accepted and reported, not fatal', () => {
  assert.deepEqual(parseAgentConfig({}, { LOG_LEVEL: 'debug', CNI_NETWORK_CONFIG: '{}' }).ignored, ['LOG_LEVEL', 'CNI_NETWORK_CONFIG']);
});

test("Istio's default ambient enablement selector (Helm) parses and is written in struct order", () => {
  const sel = [
    '- podSelector:',
    '    matchLabels: {istio.io/dataplane-mode: ambient}',
    '- podSelector:',
    '    matchExpressions:',
    '    - {key: istio.io/dataplane-mode, operator: NotIn, values: [none]}',
    '  namespaceSelector:',
    '    matchLabels: {istio.io/dataplane-mode: ambient}',
  ].join('\n');
  const c = parseAgentConfig({}, { AMBIENT_ENABLEMENT_SELECTOR: sel, AMBIENT_ENABLED: 'true', POD_NAMESPACE: 'istio-system' });
  const text = pluginConfigText(c.install);
  const want = [
    '  "enablement_selectors": [',
    '    {',
    '      "podSelector": {',
    '        "matchLabels": {',
    '          "istio.io/dataplane-mode": "ambient"',
    '        }',
    '      },',
    '      "namespaceSelector": {}',
    '    },',
    '    {',
    '      "podSelector": {',
    '        "matchExpressions": [',
    '          {',
    '            "key": "istio.io/dataplane-mode",',
    '            "operator": "NotIn",',
    '            "values": [',
    '              "none"',
    '            ]',
    '          }',
    '        ]',
    '      },',
    '      "namespaceSelector": {',
    '        "matchLabels": {',
    '          "istio.io/dataplane-mode": "ambient"',
    '        }',
    '      }',
    '    }',
    '  ],',
  ].join('\n');
  assert.ok(text.includes(want), text);
});

test('every parameter has a distinct flag and variable', () => {
  assert.equal(new Set(PARAMS.map((p) => p.flag)).size, PARAMS.length);
  assert.equal(new Set(PARAMS.map((p) => p.env)).size, PARAMS.length);
  for (const p of PARAMS) assert.equal(p.env, p.flag.toUpperCase().replace(/-/g, '_'));
});
