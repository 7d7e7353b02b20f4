// Writes the kubeconfig the CNI plugin uses to reach the API server, built from the agent's own
// service account (src/kube/kubeconfig.ts finds the server and files; the plugin reads the result
// with its parseKubeconfig). Same YAML shape as Istio's install-cni writes (clientcmd v1, keys
// sorted): cluster "local", user "istio-cni", context "istio-cni-context".
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { KUBECONFIG_NAME, KubeconfigError, inClusterFiles, inClusterServer } from '../kube/kubeconfig';
import { InstallConfig } from './config';
import { atomicWrite } from './fsutil';
import { Logger, nullLogger } from '../log/logger';

export interface Kubeconfig {
  full: string;
  /** For logs: the token and CA data replaced by REDACTED. */
  redacted: string;
}

// YAML 1.1 words a plain scalar must not be, or it would read back as a bool or null.
const YAML_RESERVED = /^(y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF|null|Null|NULL|~)$/;

/** A YAML scalar: plain when that is unambiguous (as Go's YAML writer emits these values), else double-quoted. */
export function yamlScalar(s: string): string {
  const plain = /^[A-Za-z_/][A-Za-z0-9_./+=:\-[\]]*$/.test(s) && !YAML_RESERVED.test(s) && !s.endsWith(':');
  return plain ? s : JSON.stringify(s);
}

/** The kubeconfig text for `server`, its CA (base64 data, or skip TLS verification) and a bearer token. */
export function renderKubeconfig(server: string, ca: { data?: string; skipTLS?: boolean }, token: string): string {
  const clusterLines = ca.skipTLS ? [`    insecure-skip-tls-verify: true`] : [`    certificate-authority-data: ${yamlScalar(ca.data ?? '')}`];
  return [
    'apiVersion: v1',
    'clusters:',
    '- cluster:',
    ...clusterLines,
    `    server: ${yamlScalar(server)}`,
    '  name: local',
    'contexts:',
    '- context:',
    '    cluster: local',
    '    user: istio-cni',
    '  name: istio-cni-context',
    'current-context: istio-cni-context',
    'kind: Config',
    'users:',
    '- name: istio-cni',
    '  user:',
    `    token: ${yamlScalar(token)}`,
    '',
  ].join('\n');
}

export function createKubeConfig(cfg: InstallConfig): Kubeconfig {
  const fail = (why: string) => new KubeconfigError(kubeconfigPath(cfg), why);
  const server = inClusterServer(cfg); // names the KUBERNETES_SERVICE_* variable that is not set
  const { caFile, tokenFile } = inClusterFiles(cfg);
  let caData: string | undefined;
  if (!cfg.skipTLSVerify) {
    try {
      caData = fs.readFileSync(caFile).toString('base64');
    } catch (e) {
      throw fail(`cannot read the API server CA ${caFile}: ${(e as Error).message}`);
    }
  }
  let token: string;
  try {
    // Upstream pastes the file as is; a trailing newline would end up inside the bearer header.
    token = fs.readFileSync(tokenFile, 'utf8').replace(/[\r\n]+$/, '');
  } catch (e) {
    throw fail(`cannot read the service account token ${tokenFile}: ${(e as Error).message}`);
  }
  const ca = { data: caData, skipTLS: cfg.skipTLSVerify };
  return {
    full: renderKubeconfig(server, ca, token),
    redacted: renderKubeconfig(server, { data: caData === undefined ? undefined : 'REDACTED', skipTLS: cfg.skipTLSVerify }, 'REDACTED'),
  };
}

export function kubeconfigPath(cfg: InstallConfig): string {
  return path.join(cfg.cniAgentRunDir, KUBECONFIG_NAME);
}

/**
 * (Re)writes `<run dir>/istio-cni-kubeconfig` atomically with KUBECONFIG_MODE. The file is only
 * replaced when its content changes, so an unchanged token causes no churn for readers.
 */
export async function writeKubeConfigFile(cfg: InstallConfig, log: Logger = nullLogger): Promise<string> {
  const kc = createKubeConfig(cfg);
  const file = kubeconfigPath(cfg);
  await fsp.mkdir(cfg.cniAgentRunDir, { recursive: true, mode: 0o750 });
  let current: string | undefined;
  let currentMode: number | undefined;
  try {
    current = await fsp.readFile(file, 'utf8');
    currentMode = (await fsp.stat(file)).mode & 0o7777;
  } catch {
    current = undefined;
  }
  if (current === kc.full && currentMode === (cfg.kubeconfigMode & 0o7777)) {
    log.debug('kubeconfig unchanged', { file });
    return file;
  }
  await atomicWrite(file, kc.full, cfg.kubeconfigMode);
  log.info(`wrote kubeconfig file ${file} with:\n${kc.redacted}`);
  return file;
}
