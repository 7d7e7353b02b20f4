// Istio's plugin keys in the network config (cni/pkg/plugin/plugin.go Config, as install-cni
// writes them), parsed into typed values. Keys are matched as Go's encoding/json matches them
// (case-insensitively, null = unset); unknown keys (ipam, dns, capabilities, ...) are ignored.
// A key with a wrong type or value is a code-7 error that names the key.
import * as path from 'node:path';
import { CniError, ErrorCode } from '../cni/errors';
import { JsonObject, field, isObject, jsonType } from '../cni/json';
import { DEFAULT_POD_LOOKUP } from '../kube/client';
import { THRESHOLDS, Threshold, isThreshold } from '../log/levels';

export const DEFAULT_AGENT_RUN_DIR = '/var/run/istio-cni';

export interface LabelSelectorRequirement {
  readonly key: string;
  readonly operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
  readonly values: readonly string[];
}

export interface LabelSelector {
  readonly matchLabels: Readonly<Record<string, string>>;
  readonly matchExpressions: readonly LabelSelectorRequirement[];
}

/** An ambient enablement rule; an absent selector matches everything (as upstream). */
export interface EnablementSelector {
  readonly podSelector: LabelSelector;
  readonly namespaceSelector: LabelSelector;
}

export interface PluginConfig {
  /** plugin_log_level; "" or absent = info. */
  readonly logLevel: Threshold;
  /** cni_agent_run_dir: kubeconfig, log.sock, pluginevent.sock, istio-cni.log live here. */
  readonly agentRunDir: string;
  readonly ambientEnabled: boolean;
  readonly enablementSelectors: readonly EnablementSelector[];
  readonly excludeNamespaces: readonly string[];
  /** The agent's namespace (own-agent pods pass through). */
  readonly podNamespace: string;
  /** Accepted for compatibility: rules are always nftables here. */
  readonly nativeNftables: boolean;
  readonly enableAmbientDetectionRetry: boolean;
  /** The legacy `kubernetes` block: read for compatibility, not used (as upstream). */
  readonly kubernetes: Readonly<Record<string, string>>;
  /** Ours (not upstream): pod_lookup_attempts / pod_lookup_interval_ms, default 30 x 1000 ms. */
  readonly podLookup: { readonly attempts: number; readonly intervalMs: number };
}

function bad(key: string, value: unknown, why: string): CniError {
  const shown = JSON.stringify(value);
  return new CniError(
    ErrorCode.InvalidConfig,
    `invalid network config key "${key}"`,
    `${key} ${shown && shown.length > 200 ? `${shown.slice(0, 200)}…` : shown}: ${why}`,
  );
}

function optBool(obj: JsonObject, key: string): boolean {
  const v = field(obj, key);
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw bad(key, v, `expected true or false, got ${jsonType(v)}`);
  return v;
}

function optString(obj: JsonObject, key: string): string {
  const v = field(obj, key);
  if (v === undefined) return '';
  if (typeof v !== 'string') throw bad(key, v, `expected a string, got ${jsonType(v)}`);
  return v;
}

function stringList(obj: JsonObject, key: string): string[] {
  const v = field(obj, key);
  if (v === undefined) return [];
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw bad(key, v, 'expected a list of strings');
  return v as string[];
}

function optInt(obj: JsonObject, key: string, dflt: number, min: number, max: number): number {
  const v = field(obj, key);
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw bad(key, v, `expected an integer from ${min} to ${max}`);
  }
  return v;
}

function stringMap(key: string, v: unknown): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (!isObject(v) || !Object.values(v).every((x) => typeof x === 'string')) {
    throw bad(key, v, 'expected an object of string values');
  }
  return v as Record<string, string>;
}

function labelSelector(key: string, v: unknown): LabelSelector {
  if (v === undefined || v === null) return { matchLabels: {}, matchExpressions: [] };
  if (!isObject(v)) throw bad(key, v, `expected a label selector object, got ${jsonType(v)}`);
  const matchLabels = stringMap(`${key}.matchLabels`, field(v, 'matchLabels'));
  const exprs = field(v, 'matchExpressions') ?? [];
  if (!Array.isArray(exprs)) throw bad(`${key}.matchExpressions`, exprs, 'expected a list');
  const matchExpressions = exprs.map((e, i): LabelSelectorRequirement => {
    const where = `${key}.matchExpressions[${i}]`;
    if (!isObject(e)) throw bad(where, e, 'expected an object');
    const k = field(e, 'key');
    const op = field(e, 'operator');
    const values = field(e, 'values') ?? [];
    if (typeof k !== 'string' || k === '') throw bad(`${where}.key`, k, 'expected a label key');
    if (op !== 'In' && op !== 'NotIn' && op !== 'Exists' && op !== 'DoesNotExist') {
      throw bad(`${where}.operator`, op, 'expected In, NotIn, Exists or DoesNotExist');
    }
    if (!Array.isArray(values) || !values.every((x) => typeof x === 'string')) {
      throw bad(`${where}.values`, values, 'expected a list of strings');
    }
    if ((op === 'In' || op === 'NotIn') && values.length === 0) throw bad(`${where}.values`, values, `${op} needs at least one value`);
    if ((op === 'Exists' || op === 'DoesNotExist') && values.length > 0) throw bad(`${where}.values`, values, `${op} takes no values`);
    return { key: k, operator: op, values: values as string[] };
  });
  return { matchLabels, matchExpressions };
}

export function parsePluginConfig(obj: JsonObject): PluginConfig {
  const level = optString(obj, 'plugin_log_level').toLowerCase();
  if (level !== '' && !isThreshold(level)) {
    throw bad('plugin_log_level', level, `expected one of ${THRESHOLDS.join(', ')}`);
  }
  const runDir = optString(obj, 'cni_agent_run_dir') || DEFAULT_AGENT_RUN_DIR;
  if (!path.isAbsolute(runDir) || runDir.includes('\0')) throw bad('cni_agent_run_dir', runDir, 'expected an absolute path');

  const selectorsRaw = field(obj, 'enablement_selectors');
  if (selectorsRaw !== undefined && !Array.isArray(selectorsRaw)) {
    throw bad('enablement_selectors', selectorsRaw, `expected a list of {podSelector, namespaceSelector}, got ${jsonType(selectorsRaw)}`);
  }
  const enablementSelectors = (selectorsRaw ?? []).map((s, i): EnablementSelector => {
    const where = `enablement_selectors[${i}]`;
    if (!isObject(s)) throw bad(where, s, 'expected an object with podSelector and/or namespaceSelector');
    return {
      podSelector: labelSelector(`${where}.podSelector`, field(s, 'podSelector')),
      namespaceSelector: labelSelector(`${where}.namespaceSelector`, field(s, 'namespaceSelector')),
    };
  });

  const kube = field(obj, 'kubernetes');
  if (kube !== undefined && !isObject(kube)) throw bad('kubernetes', kube, `expected an object, got ${jsonType(kube)}`);
  const kubernetes: Record<string, string> = {};
  for (const [k, v] of Object.entries(kube ?? {})) {
    if (typeof v === 'string') kubernetes[k] = v;
  }

  return {
    logLevel: isThreshold(level) ? level : 'info',
    agentRunDir: runDir,
    ambientEnabled: optBool(obj, 'ambient_enabled'),
    enablementSelectors,
    excludeNamespaces: stringList(obj, 'exclude_namespaces'),
    podNamespace: optString(obj, 'pod_namespace'),
    nativeNftables: optBool(obj, 'native_nftables'),
    enableAmbientDetectionRetry: optBool(obj, 'enable_ambient_detection_retry'),
    kubernetes,
    podLookup: {
      attempts: optInt(obj, 'pod_lookup_attempts', DEFAULT_POD_LOOKUP.attempts, 1, 1000),
      intervalMs: optInt(obj, 'pod_lookup_interval_ms', DEFAULT_POD_LOOKUP.intervalMs, 0, 60_000),
    },
  };
}
