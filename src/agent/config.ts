// The node agent's configuration: Istio's install-cni parameters (same environment variable
// names, defaults and meanings; reference 5.1) plus our own, each also a `--kebab-case` flag.
// A flag beats the environment, which beats the default. Every value is parsed here, once;
// a malformed one stops start-up with an InputError naming the variable (or flag) and the value.
import * as os from 'node:os';
import * as path from 'node:path';
import type { Argv } from 'yargs';
import { InputError } from '../values/errors';
import { parseIpAddress } from '../values/typed';
import {
  DEFAULT_ISTIO_OWNED_CNI_CONFIG_FILENAME,
  DEFAULT_PLUGIN_TYPE,
  EnablementSelector,
  InstallConfig,
  PluginLogLevel,
  parseEnablementSelectors,
  splitExcludeNamespaces,
} from '../installer/config';
import { THRESHOLDS, Threshold, isThreshold } from '../log/levels';
import { LogOptions, parseLogOptions, withLogOptions } from './log-options';

type Kind =
  | 'string' // any text
  | 'dir' // absolute path
  | 'filename' // a file name inside a directory (no '/')
  | 'bool' // Go strconv.ParseBool spellings
  | 'int'
  | 'port' // 0-65535
  | 'ip' // one IPv4 or IPv6 address, or empty
  | 'monitoring-port' // <= 0 disables
  | 'mode' // file mode, Go base-0 integer (0600, 0o600, 384)
  | 'log-level' // debug|info|warn|error|fatal|none
  | 'selector' // YAML list of enablement selectors
  | 'exit-code'; // 0-255

export interface Param {
  flag: string;
  env: string;
  kind: Kind;
  def: string;
  describe: string;
  /** Accepted for compatibility with Istio's chart; has no effect here. */
  unused?: boolean;
  /** Unused and set by the chart on every install: no "ignored" warning. */
  quiet?: boolean;
}

const P = (flag: string, kind: Kind, def: string, describe: string, extra: Partial<Param> = {}): Param => ({
  flag,
  env: flag.toUpperCase().replace(/-/g, '_'),
  kind,
  def,
  describe,
  ...extra,
});

/** Every parameter, in the order `--help` lists them. */
export const PARAMS: readonly Param[] = [
  // Installation (Istio install-cni)
  P('mounted-cni-net-dir', 'dir', '/host/etc/cni/net.d', "The host's CNI config dir as mounted in this container"),
  P('cni-bin-dir', 'dir', '/host/opt/cni/bin', "The host's CNI bin dir as mounted in this container (the plugin is installed here)"),
  P('cni-bin-source-dir', 'dir', '/opt/cni/bin', 'The plugin payload in this image; every regular file is copied to CNI_BIN_DIR'),
  P('cni-plugin-type', 'filename', DEFAULT_PLUGIN_TYPE, "The plugin's `type` in the conflist and the name its executable is installed under"),
  P('cni-conf-name', 'filename', '', 'Name of the primary CNI config file; empty = the first valid one in the net dir'),
  P('chained-cni-plugin', 'bool', 'true', 'Chain into the primary CNI config (false = write a standalone config)'),
  P('istio-owned-cni-config', 'bool', 'false', 'Write the chained config to an Istio-owned file (needs CHAINED_CNI_PLUGIN and AMBIENT_ENABLED)'),
  P('istio-owned-cni-config-filename', 'filename', '', `File name of the Istio-owned config (empty = ${DEFAULT_ISTIO_OWNED_CNI_CONFIG_FILENAME} when owned)`),
  P('cni-agent-run-dir', 'dir', '/var/run/istio-cni', 'Host dir for the agent sockets, the plugin kubeconfig and logs'),
  P('kubeconfig-mode', 'mode', '0600', 'File mode of the plugin kubeconfig'),
  P('cni-conf-group-read', 'bool', 'false', 'Write our CNI config files 0640 instead of 0600'),
  P('kube-ca-file', 'string', '', 'CA file for the plugin kubeconfig (empty = <SERVICE_ACCOUNT_DIR>/ca.crt)'),
  P('skip-tls-verify', 'bool', 'false', 'Write insecure-skip-tls-verify into the plugin kubeconfig'),
  P('service-account-dir', 'dir', '/var/run/secrets/kubernetes.io/serviceaccount', 'Where the service account token and CA are mounted'),
  P('plugin-log-level', 'log-level', 'info', 'Log level written into the plugin config (plugin_log_level)'),
  P('exclude-namespaces', 'string', '', 'Comma-separated namespaces the plugin ignores'),
  P('pod-namespace', 'string', '', 'Namespace of this agent (written into the plugin config; used for the upgrade check)'),
  P('native-nftables', 'bool', 'false', 'Tell the plugin to program nftables (written into the plugin config)'),
  // Servers
  P('monitoring-port', 'monitoring-port', '15014', 'HTTP port for Prometheus metrics (/metrics); <= 0 disables'),
  P('health-port', 'port', '8000', 'HTTP port for /healthz and /readyz (0 = any free port)'),
  P('listen-address', 'ip', '', 'IP address the health and metrics servers bind to (empty = all interfaces)'),
  P('agent-log-level', 'log-level', 'info', "The agent's own log level (plugin logs relayed through log.sock follow it)"),
  P(
    'fast-path-pod-cache',
    'bool',
    'true',
    "Fast path: answer the plugin's pod lookups from a watch of this node's pods (needs NODE_NAME and the API address); false = a GET per ADD, as Istio's plugin does",
  ),
  // Ambient
  P('ambient-enabled', 'bool', 'false', 'Ambient mode'),
  P('ambient-enablement-selector', 'selector', '', 'YAML list of {podSelector, namespaceSelector} that enable ambient'),
  P('ambient-dns-capture', 'bool', 'false', 'Ambient: capture DNS'),
  P('ambient-ipv6', 'bool', 'false', 'Ambient: IPv6 capture'),
  P('ambient-reconcile-pod-rules-on-startup', 'bool', 'false', 'Ambient: re-apply pod rules at start'),
  P('ambient-disable-safe-upgrade', 'bool', 'false', 'Ambient: always clean up on shutdown, even during an upgrade'),
  P('enable-ambient-detection-retry', 'bool', 'false', 'Plugin: retry ambient detection on API errors'),
  P('ztunnel-uds-address', 'string', '/var/run/ztunnel/ztunnel.sock', 'Ambient: the socket ztunnel connects to'),
  P('host-probe-snat-ip', 'string', '169.254.7.127', "Ambient: the address kubelet's probes to pods are SNATed to"),
  P('host-probe-snat-ipv6', 'string', 'fd16:9254:7127:1337:ffff:ffff:ffff:ffff', "Ambient: the IPv6 address kubelet's probes are SNATed to"),
  P('system-namespace', 'string', 'istio-system', 'Ambient: the namespace ztunnel runs in (its pods, label app=ztunnel, are never captured)'),
  P(
    'allow-switch-to-host-ns',
    'bool',
    'false',
    "Do host-side work (ambient probe rules) in the node's netns (HOST_NETNS) rather than this pod's; Istio's chart sets it unless the pod uses hostNetwork",
  ),
  P('host-netns', 'dir', '/host/proc/1/ns/net', "The node's network namespace as seen from this container"),
  // Repair controller (src/agent/repair)
  P('repair-enabled', 'bool', 'true', 'Repair controller'),
  P('repair-repair-pods', 'bool', 'false', 'Repair: re-program broken pods'),
  P('repair-delete-pods', 'bool', 'false', 'Repair: delete broken pods'),
  P('repair-label-pods', 'bool', 'false', 'Repair: label broken pods'),
  P('repair-broken-pod-label-key', 'string', 'cni.istio.io/uninitialized', 'Repair: label key'),
  P('repair-broken-pod-label-value', 'string', 'true', 'Repair: label value'),
  P('repair-node-name', 'string', '', 'Repair: node to watch'),
  P('repair-sidecar-annotation', 'string', 'sidecar.istio.io/status', 'Repair: annotation that marks sidecar pods'),
  P('repair-init-container-name', 'string', 'istio-validation', 'Repair: name of the validation init container'),
  P('repair-init-container-termination-message', 'string', '', 'Repair: expected termination message'),
  P('repair-init-container-exit-code', 'exit-code', '126', 'Repair: expected exit code'),
  P('repair-label-selectors', 'string', '', 'Repair: extra label selectors'),
  P('repair-field-selectors', 'string', '', 'Repair: extra field selectors'),
  P('repair-host-proc-dir', 'dir', '/host/proc', "Repair: the node's /proc as mounted here (REPAIR_REPAIR_PODS looks for pod netns in it)"),
  // Istio chart variables that install-cni itself ignores
  P('log-level', 'string', 'warn', "Unused (Istio's fallback plugin log level)", { unused: true }),
  P('cni-network-config', 'string', '', 'Unused (old CNI config template)', { unused: true }),
  P('cni-network-config-file', 'string', '', 'Unused (old CNI config template file)', { unused: true }),
  // Set by Istio's chart, read by nothing in Istio's install-cni either: accepted without a warning.
  P('current-agent-version', 'string', '', "Unused (the chart's image tag)", { unused: true, quiet: true }),
  P('repair-run-as-daemon', 'string', '', 'Unused (the repair controller always runs inside the agent)', { unused: true, quiet: true }),
  P('istio-owned-cni-conf-filename', 'string', '', 'Unused (the chart misspells ISTIO_OWNED_CNI_CONFIG_FILENAME; as in Istio, it has no effect)', {
    unused: true,
  }),
  P('gomemlimit', 'string', '', "Unused (the Go runtime's memory limit; the chart fills it from limits.memory)", { unused: true, quiet: true }),
  P('gomaxprocs', 'string', '', "Unused (the Go runtime's CPU count; the chart fills it from limits.cpu)", { unused: true, quiet: true }),
];

export interface AmbientSettings {
  enabled: boolean;
  enablementSelectors: EnablementSelector[];
  dnsCapture: boolean;
  ipv6: boolean;
  reconcilePodRulesOnStartup: boolean;
  disableSafeUpgrade: boolean;
  ztunnelUDSAddress: string;
  /** HOST_PROBE_SNAT_IP / HOST_PROBE_SNAT_IPV6, canonical text. */
  hostProbeSNATIP: string;
  hostProbeSNATIPv6: string;
  /** SYSTEM_NAMESPACE. */
  systemNamespace: string;
}

export interface RepairSettings {
  enabled: boolean;
  repairPods: boolean;
  deletePods: boolean;
  labelPods: boolean;
  labelKey: string;
  labelValue: string;
  nodeName: string;
  sidecarAnnotation: string;
  initContainerName: string;
  initTerminationMsg: string;
  initExitCode: number;
  labelSelectors: string;
  fieldSelectors: string;
  /** REPAIR_HOST_PROC_DIR: the node's procfs as mounted in the agent's container. */
  hostProcDir: string;
}

export interface AgentConfig {
  install: InstallConfig;
  ambient: AmbientSettings;
  repair: RepairSettings;
  monitoringPort: number;
  healthPort: number;
  listenAddress: string;
  logLevel: Threshold;
  /** FAST_PATH_POD_CACHE: the fast path's pod lookups from a watch of this node's pods. */
  podCache: boolean;
  /** KUBERNETES_NODE_NAME, else the host name (as upstream). */
  k8sNodeName: string;
  /** NODE_NAME (downward API): the node the upgrade check looks at. */
  nodeName: string;
  podName: string;
  /** Where host-side work goes (src/agent/host-side.ts). */
  hostSide: { allowSwitch: boolean; nodeNetns: string };
  /** Unused parameters that were set (to warn about). */
  ignored: string[];
  /** Istio's logging flags (--log_output_level, --log_as_json, ...) over AGENT_LOG_LEVEL. */
  logging: LogOptions;
}

const TRUE = new Set(['1', 't', 'T', 'TRUE', 'true', 'True']);
const FALSE = new Set(['0', 'f', 'F', 'FALSE', 'false', 'False']);

function parseBool(source: string, s: string): boolean {
  if (TRUE.has(s)) return true;
  if (FALSE.has(s)) return false;
  throw new InputError(source, s, 'expected true or false');
}

function parseInt10(source: string, s: string): number {
  if (!/^[+-]?[0-9]{1,9}$/.test(s.trim())) throw new InputError(source, s, 'expected an integer');
  return Number(s.trim());
}

/** Go's strconv.ParseInt(s, 0, 0) spellings, as viper reads int flags. */
function parseMode(source: string, s: string): number {
  const t = s.trim().replace(/_/g, '');
  let n: number;
  if (/^0[oO][0-7]+$/.test(t)) n = parseInt(t.slice(2), 8);
  else if (/^0[xX][0-9a-fA-F]+$/.test(t)) n = parseInt(t.slice(2), 16);
  else if (/^0[bB][01]+$/.test(t)) n = parseInt(t.slice(2), 2);
  else if (/^0[0-7]*$/.test(t)) n = parseInt(t, 8);
  else if (/^[1-9][0-9]*$/.test(t)) n = Number(t);
  else throw new InputError(source, s, 'expected a file mode such as 0600');
  if (n > 0o777) throw new InputError(source, s, 'file mode must be at most 0777');
  return n;
}

type Value = string | number | boolean | EnablementSelector[];

function parseValue(p: Param, source: string, raw: string): Value {
  switch (p.kind) {
    case 'string':
      return raw;
    case 'dir':
      if (raw === '') throw new InputError(source, raw, 'must not be empty');
      if (!path.isAbsolute(raw)) throw new InputError(source, raw, 'expected an absolute path');
      return path.normalize(raw);
    case 'filename':
      if (raw.includes('/') || raw === '.' || raw === '..' || raw.includes('\0')) {
        throw new InputError(source, raw, 'expected a file name (no directory part)');
      }
      if (p.flag === 'cni-plugin-type' && !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(raw)) {
        throw new InputError(source, raw, 'expected a plugin name of letters, digits and "._-"');
      }
      return raw;
    case 'bool':
      return parseBool(source, raw);
    case 'int':
      return parseInt10(source, raw);
    case 'ip':
      return raw === '' ? '' : parseIpAddress(source, raw, raw.includes(':') ? 6 : 4).text;
    case 'port': {
      const n = parseInt10(source, raw);
      if (n < 0 || n > 65535) throw new InputError(source, raw, 'expected a port 0-65535');
      return n;
    }
    case 'monitoring-port': {
      const n = parseInt10(source, raw);
      if (n > 65535) throw new InputError(source, raw, 'expected a port up to 65535 (<= 0 disables)');
      return n;
    }
    case 'exit-code': {
      const n = parseInt10(source, raw);
      if (n < 0 || n > 255) throw new InputError(source, raw, 'expected an exit code 0-255');
      return n;
    }
    case 'mode':
      return parseMode(source, raw);
    case 'log-level':
      if (!isThreshold(raw)) throw new InputError(source, raw, `expected one of ${THRESHOLDS.join(', ')}`);
      return raw;
    case 'selector':
      return parseEnablementSelectors(source, raw);
  }
}

/** What yargs hands over for a flag declared as a string: normalise to text (or undefined). */
function flagText(v: unknown, p: Param): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (Array.isArray(v)) return flagText(v[v.length - 1], p);
  if (v === true || (v === '' && p.kind === 'bool')) return 'true';
  if (v === false) return 'false';
  return String(v);
}

/**
 * Parses the agent configuration from flags (yargs argv, keys = flag names) and the environment.
 * An empty environment variable counts as unset for every kind but free text.
 */
export function parseAgentConfig(argv: Record<string, unknown>, env: NodeJS.ProcessEnv): AgentConfig {
  const v = new Map<string, Value>();
  const ignored: string[] = [];
  for (const p of PARAMS) {
    const fromFlag = flagText(argv[p.flag], p);
    const fromEnv = env[p.env];
    let raw: string | undefined;
    let source: string;
    if (fromFlag !== undefined) {
      raw = fromFlag;
      source = `--${p.flag}`;
    } else if (fromEnv !== undefined && (fromEnv !== '' || p.kind === 'string')) {
      raw = fromEnv;
      source = p.env;
    } else {
      raw = undefined;
      source = `default of ${p.env}`;
    }
    if (p.unused) {
      if (raw !== undefined && raw !== p.def && !p.quiet) ignored.push(p.env);
      continue;
    }
    v.set(p.flag, parseValue(p, source, raw ?? p.def));
  }
  const s = (k: string) => v.get(k) as string;
  const b = (k: string) => v.get(k) as boolean;
  const n = (k: string) => v.get(k) as number;

  // As Istio: the plugin logs at the cni-plugin scope's level, unless PLUGIN_LOG_LEVEL (ours) says otherwise.
  const logging = parseLogOptions(argv, s('agent-log-level') as Threshold);
  const pluginLevelSet =
    flagText(
      argv['plugin-log-level'],
      PARAMS.find((p) => p.flag === 'plugin-log-level')!,
    ) !== undefined || (env.PLUGIN_LOG_LEVEL ?? '') !== '';
  const pluginLogLevel: PluginLogLevel = pluginLevelSet ? (s('plugin-log-level') as PluginLogLevel) : logging.levels.of('cni-plugin');

  const istioOwned = b('istio-owned-cni-config');
  let ownedName = s('istio-owned-cni-config-filename');
  if (istioOwned && ownedName === '') ownedName = DEFAULT_ISTIO_OWNED_CNI_CONFIG_FILENAME;
  const selectors = v.get('ambient-enablement-selector') as EnablementSelector[];

  const install: InstallConfig = {
    mountedCNINetDir: s('mounted-cni-net-dir'),
    cniAgentRunDir: s('cni-agent-run-dir'),
    cniConfName: s('cni-conf-name'),
    chainedCNIPlugin: b('chained-cni-plugin'),
    istioOwnedCNIConfig: istioOwned,
    istioOwnedCNIConfigFilename: ownedName,
    pluginLogLevel,
    kubeconfigMode: n('kubeconfig-mode'),
    cniConfGroupRead: b('cni-conf-group-read'),
    kubeCAFile: s('kube-ca-file'),
    skipTLSVerify: b('skip-tls-verify'),
    excludeNamespaces: splitExcludeNamespaces(s('exclude-namespaces')),
    podNamespace: s('pod-namespace'),
    k8sServiceProtocol: env.KUBERNETES_SERVICE_PROTOCOL ?? '',
    k8sServiceHost: env.KUBERNETES_SERVICE_HOST ?? '',
    k8sServicePort: env.KUBERNETES_SERVICE_PORT ?? '',
    k8sServiceAccountPath: s('service-account-dir'),
    cniBinSourceDir: s('cni-bin-source-dir'),
    cniBinTargetDirs: [s('cni-bin-dir')],
    ambientEnabled: b('ambient-enabled'),
    enablementSelectors: selectors,
    enableAmbientDetectionRetry: b('enable-ambient-detection-retry'),
    nativeNftables: b('native-nftables'),
    pluginType: s('cni-plugin-type'),
  };
  if (install.k8sServicePort !== '' && !/^[0-9]{1,5}$/.test(install.k8sServicePort)) {
    throw new InputError('KUBERNETES_SERVICE_PORT', install.k8sServicePort, 'expected a port number');
  }
  if (install.k8sServiceProtocol !== '' && !/^https?$/.test(install.k8sServiceProtocol)) {
    throw new InputError('KUBERNETES_SERVICE_PROTOCOL', install.k8sServiceProtocol, 'expected http or https');
  }
  return {
    install,
    ambient: {
      enabled: install.ambientEnabled,
      enablementSelectors: selectors,
      dnsCapture: b('ambient-dns-capture'),
      ipv6: b('ambient-ipv6'),
      reconcilePodRulesOnStartup: b('ambient-reconcile-pod-rules-on-startup'),
      disableSafeUpgrade: b('ambient-disable-safe-upgrade'),
      ztunnelUDSAddress: s('ztunnel-uds-address'),
      hostProbeSNATIP: parseIpAddress('HOST_PROBE_SNAT_IP', s('host-probe-snat-ip'), 4).text,
      hostProbeSNATIPv6: parseIpAddress('HOST_PROBE_SNAT_IPV6', s('host-probe-snat-ipv6'), 6).text,
      systemNamespace: s('system-namespace'),
    },
    repair: {
      enabled: b('repair-enabled'),
      repairPods: b('repair-repair-pods'),
      deletePods: b('repair-delete-pods'),
      labelPods: b('repair-label-pods'),
      labelKey: s('repair-broken-pod-label-key'),
      labelValue: s('repair-broken-pod-label-value'),
      nodeName: s('repair-node-name'),
      sidecarAnnotation: s('repair-sidecar-annotation'),
      initContainerName: s('repair-init-container-name'),
      initTerminationMsg: s('repair-init-container-termination-message'),
      initExitCode: n('repair-init-container-exit-code'),
      labelSelectors: s('repair-label-selectors'),
      fieldSelectors: s('repair-field-selectors'),
      hostProcDir: s('repair-host-proc-dir'),
    },
    monitoringPort: n('monitoring-port'),
    healthPort: n('health-port'),
    listenAddress: s('listen-address'),
    logLevel: s('agent-log-level') as Threshold,
    podCache: b('fast-path-pod-cache'),
    k8sNodeName: env.KUBERNETES_NODE_NAME || os.hostname(),
    nodeName: env.NODE_NAME ?? '',
    podName: env.POD_NAME ?? '',
    hostSide: { allowSwitch: b('allow-switch-to-host-ns'), nodeNetns: s('host-netns') },
    ignored,
    logging,
  };
}

/** Declares every parameter as a yargs option; `--help` shows the variable and the default. */
export function withAgentOptions<T>(y: Argv<T>): Argv<T> {
  let out = y;
  for (const p of PARAMS) {
    out = out.option(p.flag, {
      type: 'string',
      describe: `${p.describe} [env ${p.env}]`,
      defaultDescription: JSON.stringify(p.def),
      ...(p.unused ? { group: 'Accepted for Istio chart compatibility, unused:' } : {}),
    }) as Argv<T>;
  }
  return withLogOptions(out);
}

/** A one-line summary of the effective configuration for the start-up log. */
export function describeConfig(c: AgentConfig): Record<string, unknown> {
  const i = c.install;
  return {
    mountedCNINetDir: i.mountedCNINetDir,
    cniBinDir: i.cniBinTargetDirs.join(','),
    cniBinSourceDir: i.cniBinSourceDir,
    pluginType: i.pluginType,
    cniConfName: i.cniConfName,
    chainedCNIPlugin: i.chainedCNIPlugin,
    istioOwnedCNIConfig: i.istioOwnedCNIConfig,
    istioOwnedCNIConfigFilename: i.istioOwnedCNIConfigFilename,
    cniAgentRunDir: i.cniAgentRunDir,
    kubeconfigMode: `0${i.kubeconfigMode.toString(8)}`,
    serviceAccountDir: i.k8sServiceAccountPath,
    pluginLogLevel: i.pluginLogLevel,
    ambientEnabled: c.ambient.enabled,
    allowSwitchToHostNS: c.hostSide.allowSwitch,
    monitoringPort: c.monitoringPort,
    healthPort: c.healthPort,
  };
}
