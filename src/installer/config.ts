// The installer's typed configuration (the fields of Istio's config.InstallConfig that the
// install path reads), and the istio-cni plugin entry it writes into the node's CNI config.
import * as YAML from 'yaml';
import { Threshold } from '../log/levels';
import { InputError } from '../values/errors';
import { GoStruct, JsonValue, isJsonObject, marshalIndent } from './gojson';

export const DEFAULT_PLUGIN_TYPE = 'istio-cni';
export const DEFAULT_ISTIO_OWNED_CNI_CONFIG_FILENAME = '02-istio-cni.conflist';
export const STANDALONE_CONF_NAME = 'YYY-istio-cni.conf';
export const CNI_CONF_MODE_DEFAULT = 0o600;
export const CNI_CONF_MODE_GROUP_READ = 0o640;

/** plugin_log_level: the one level table's thresholds. */
export type PluginLogLevel = Threshold;

export interface LabelSelectorRequirement {
  key: string;
  operator: string;
  values: string[] | null;
}
export interface LabelSelector {
  matchLabels: Record<string, string> | null;
  matchExpressions: LabelSelectorRequirement[] | null;
}
export interface EnablementSelector {
  podSelector: LabelSelector;
  namespaceSelector: LabelSelector;
}

export interface InstallConfig {
  /** The host's CNI net dir as mounted in the agent (MOUNTED_CNI_NET_DIR). */
  mountedCNINetDir: string;
  /** Host path for our sockets and kubeconfig (CNI_AGENT_RUN_DIR). */
  cniAgentRunDir: string;
  /** The primary CNI config file name; "" = the first valid one (CNI_CONF_NAME). */
  cniConfName: string;
  chainedCNIPlugin: boolean;
  istioOwnedCNIConfig: boolean;
  istioOwnedCNIConfigFilename: string;
  pluginLogLevel: PluginLogLevel;
  kubeconfigMode: number;
  cniConfGroupRead: boolean;
  kubeCAFile: string;
  skipTLSVerify: boolean;
  /** EXCLUDE_NAMESPACES split on commas; null when empty (Go's nil slice, written as null). */
  excludeNamespaces: string[] | null;
  podNamespace: string;
  k8sServiceProtocol: string;
  k8sServiceHost: string;
  k8sServicePort: string;
  k8sServiceAccountPath: string;
  /** Where the plugin payload is in our image. */
  cniBinSourceDir: string;
  /** Host CNI bin dirs (as mounted) to install the payload into. */
  cniBinTargetDirs: string[];
  ambientEnabled: boolean;
  enablementSelectors: EnablementSelector[];
  enableAmbientDetectionRetry: boolean;
  nativeNftables: boolean;
  /** The plugin's `type` in the conflist, and the name its executable is installed under. */
  pluginType: string;
}

/** Defaults for every field, so tests and callers only state what they change. */
export function installConfig(overrides: Partial<InstallConfig>): InstallConfig {
  return {
    mountedCNINetDir: '/host/etc/cni/net.d',
    cniAgentRunDir: '/var/run/istio-cni',
    cniConfName: '',
    chainedCNIPlugin: true,
    istioOwnedCNIConfig: false,
    istioOwnedCNIConfigFilename: '',
    pluginLogLevel: 'info',
    kubeconfigMode: 0o600,
    cniConfGroupRead: false,
    kubeCAFile: '',
    skipTLSVerify: false,
    excludeNamespaces: null,
    podNamespace: '',
    k8sServiceProtocol: '',
    k8sServiceHost: '',
    k8sServicePort: '',
    k8sServiceAccountPath: '/var/run/secrets/kubernetes.io/serviceaccount',
    cniBinSourceDir: '/opt/cni/bin',
    cniBinTargetDirs: ['/host/opt/cni/bin'],
    ambientEnabled: false,
    enablementSelectors: [],
    enableAmbientDetectionRetry: false,
    nativeNftables: false,
    pluginType: DEFAULT_PLUGIN_TYPE,
    ...overrides,
  };
}

/** Istio-owned mode is in force only when all three switches are on. */
export function useIstioOwnedCNIConfig(cfg: InstallConfig): boolean {
  return cfg.istioOwnedCNIConfig && cfg.chainedCNIPlugin && cfg.ambientEnabled;
}

export function cniConfFileMode(cfg: InstallConfig): number {
  return cfg.cniConfGroupRead ? CNI_CONF_MODE_GROUP_READ : CNI_CONF_MODE_DEFAULT;
}

/** Istio's SplitExcludeNamespaces: trimmed, empties dropped; nothing left = nil (null). */
export function splitExcludeNamespaces(s: string): string[] | null {
  const out = s
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');
  return out.length === 0 ? null : out;
}

// ---- AMBIENT_ENABLEMENT_SELECTOR: YAML decoded the way sigs.k8s.io/yaml does it (YAML 1.1
// ---- scalars, then encoding/json into []EnablementSelector: unknown keys ignored, key match
// ---- exact or case-insensitive, null leaves the zero value, an empty document leaves []).

function field(obj: Record<string, JsonValue>, name: string): JsonValue | undefined {
  let found: JsonValue | undefined;
  for (const [k, v] of Object.entries(obj)) {
    if (k === name) return v;
    if (k.toLowerCase() === name.toLowerCase()) found = v;
  }
  return found;
}

function strictString(source: string, v: JsonValue | undefined, what: string): string {
  if (v === undefined || v === null) return '';
  if (typeof v !== 'string') throw new InputError(source, v, `${what} must be a string`);
  return v;
}

function parseLabelSelector(source: string, v: JsonValue | undefined): LabelSelector {
  const sel: LabelSelector = { matchLabels: null, matchExpressions: null };
  if (v === undefined || v === null) return sel;
  if (!isJsonObject(v)) throw new InputError(source, v, 'a label selector must be a mapping');
  const labels = field(v, 'matchLabels');
  if (labels !== undefined && labels !== null) {
    if (!isJsonObject(labels)) throw new InputError(source, labels, 'matchLabels must be a mapping');
    sel.matchLabels = Object.fromEntries(Object.entries(labels).map(([k, val]) => [k, strictString(source, val, `matchLabels.${k}`)]));
  }
  const exprs = field(v, 'matchExpressions');
  if (exprs !== undefined && exprs !== null) {
    if (!Array.isArray(exprs)) throw new InputError(source, exprs, 'matchExpressions must be a list');
    sel.matchExpressions = exprs.map((e) => {
      if (e === null) return { key: '', operator: '', values: null };
      if (!isJsonObject(e)) throw new InputError(source, e, 'a match expression must be a mapping');
      const vals = field(e, 'values');
      let values: string[] | null = null;
      if (vals !== undefined && vals !== null) {
        if (!Array.isArray(vals)) throw new InputError(source, vals, 'values must be a list');
        values = vals.map((x) => strictString(source, x, 'values[]'));
      }
      return { key: strictString(source, field(e, 'key'), 'key'), operator: strictString(source, field(e, 'operator'), 'operator'), values };
    });
  }
  return sel;
}

export function parseEnablementSelectors(source: string, text: string): EnablementSelector[] {
  let doc: unknown;
  try {
    doc = YAML.parse(text, { version: '1.1', uniqueKeys: false });
  } catch (e) {
    throw new InputError(source, text, `not valid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  if (doc === undefined || doc === null) return [];
  if (!Array.isArray(doc)) throw new InputError(source, text, 'expected a YAML list of {podSelector, namespaceSelector}');
  return (doc as JsonValue[]).map((item) => {
    if (item === null) return { podSelector: parseLabelSelector(source, null), namespaceSelector: parseLabelSelector(source, null) };
    if (!isJsonObject(item)) throw new InputError(source, item, 'each selector must be a mapping');
    return {
      podSelector: parseLabelSelector(source, field(item, 'podSelector')),
      namespaceSelector: parseLabelSelector(source, field(item, 'namespaceSelector')),
    };
  });
}

// ---- The plugin entry: Istio marshals its plugin.Config struct, so this keeps struct order.

function labelSelectorStruct(s: LabelSelector): GoStruct {
  const fields: [string, unknown][] = [];
  if (s.matchLabels && Object.keys(s.matchLabels).length > 0) fields.push(['matchLabels', s.matchLabels]);
  if (s.matchExpressions && s.matchExpressions.length > 0) {
    fields.push([
      'matchExpressions',
      s.matchExpressions.map((e) => {
        const f: [string, unknown][] = [
          ['key', e.key],
          ['operator', e.operator],
        ];
        if (e.values && e.values.length > 0) f.push(['values', e.values]);
        return new GoStruct(f);
      }),
    ]);
  }
  return new GoStruct(fields);
}

/** The istio-cni plugin config text (with its trailing newline), as createCNIConfigFile builds it. */
export function pluginConfigText(cfg: InstallConfig): string {
  const selectors = cfg.enablementSelectors.map(
    (s) =>
      new GoStruct([
        ['podSelector', labelSelectorStruct(s.podSelector)],
        ['namespaceSelector', labelSelectorStruct(s.namespaceSelector)],
      ]),
  );
  const struct = new GoStruct([
    ['cniVersion', '0.3.1'],
    ['name', 'istio-cni'],
    ['type', cfg.pluginType],
    ['ipam', new GoStruct([])],
    ['dns', new GoStruct([])],
    ['plugin_log_level', cfg.pluginLogLevel],
    ['cni_agent_run_dir', cfg.cniAgentRunDir],
    ['ambient_enabled', cfg.ambientEnabled],
    ['enablement_selectors', selectors],
    ['exclude_namespaces', cfg.excludeNamespaces],
    ['pod_namespace', cfg.podNamespace],
    ['native_nftables', cfg.nativeNftables],
    ['enable_ambient_detection_retry', cfg.enableAmbientDetectionRetry],
  ]);
  return marshalIndent(struct) + '\n';
}
