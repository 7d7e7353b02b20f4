// Where the API server is and how to authenticate, from either source the node component has:
// - the kubeconfig install-cni writes to <cni_agent_run_dir>/istio-cni-kubeconfig (one cluster,
//   one user with a bearer token, one context), read by the plugin: parseKubeconfig;
// - the agent's own pod environment (KUBERNETES_SERVICE_* and the service account files), from
//   which the agent reaches the API and which src/installer/kubeconfig.ts writes that file from:
//   inClusterServer / inClusterFiles.
// Error messages never include the token.
import * as path from 'node:path';
import { YamlError, YamlValue, parseYamlLite } from './yaml-lite';

export const KUBECONFIG_NAME = 'istio-cni-kubeconfig';

export interface KubeEndpoint {
  /** Base URL, e.g. https://10.96.0.1:443 (no trailing slash). */
  readonly server: string;
  /** PEM CA bundle; absent means the system roots. */
  readonly ca?: string;
  readonly insecureSkipTlsVerify: boolean;
  readonly tlsServerName?: string;
  readonly token?: string;
  readonly clientCert?: string;
  readonly clientKey?: string;
}

export class KubeconfigError extends Error {
  constructor(
    readonly file: string,
    why: string,
  ) {
    super(`kubeconfig ${file}: ${why}`);
    this.name = 'KubeconfigError';
  }
}

/** The agent's in-cluster settings (the field names of the installer's InstallConfig). */
export interface InClusterSettings {
  /** KUBERNETES_SERVICE_PROTOCOL; '' = https. */
  readonly k8sServiceProtocol: string;
  readonly k8sServiceHost: string;
  readonly k8sServicePort: string;
  /** SERVICE_ACCOUNT_DIR: holds `token` and `ca.crt`. */
  readonly k8sServiceAccountPath: string;
  /** KUBE_CA_FILE; '' = <service account dir>/ca.crt. */
  readonly kubeCAFile: string;
  readonly skipTLSVerify: boolean;
}

/** net.JoinHostPort. */
export function joinHostPort(host: string, port: string): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * The API server's base URL from KUBERNETES_SERVICE_{PROTOCOL,HOST,PORT}. Throws naming the
 * variable that is not set (as install-cni: "Is this not running within a pod?").
 */
export function inClusterServer(s: InClusterSettings): string {
  for (const [name, v] of [
    ['KUBERNETES_SERVICE_HOST', s.k8sServiceHost],
    ['KUBERNETES_SERVICE_PORT', s.k8sServicePort],
  ]) {
    if (v === '') throw new Error(`${name} not set. Is this not running within a pod?`);
  }
  return `${s.k8sServiceProtocol || 'https'}://${joinHostPort(s.k8sServiceHost, s.k8sServicePort)}`;
}

/** The service account's token file and the CA bundle to trust. */
export function inClusterFiles(s: InClusterSettings): { tokenFile: string; caFile: string } {
  return {
    tokenFile: path.join(s.k8sServiceAccountPath, 'token'),
    caFile: s.kubeCAFile || path.join(s.k8sServiceAccountPath, 'ca.crt'),
  };
}

type Obj = { [k: string]: YamlValue };
const isObj = (v: YamlValue | undefined): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Reads the files a kubeconfig may point to (certificate-authority, tokenFile). */
export type ReadFile = (path: string) => string;

export function parseKubeconfig(text: string, file: string, readFile?: ReadFile): KubeEndpoint {
  const fail = (why: string) => new KubeconfigError(file, why);
  let doc: YamlValue;
  try {
    doc = parseYamlLite(text);
  } catch (e) {
    throw fail(e instanceof YamlError ? `not readable YAML: ${e.message}` : String(e));
  }
  if (!isObj(doc)) throw fail('expected a mapping at the top level');

  const named = (listKey: string, itemKey: string, name: string | undefined): Obj => {
    const list = doc && isObj(doc) ? doc[listKey] : undefined;
    if (!Array.isArray(list) || list.length === 0) throw fail(`no ${listKey}`);
    const items = list.filter(isObj);
    const pick = name === undefined ? (items.length === 1 ? items[0] : undefined) : items.find((x) => x.name === name);
    if (!pick) throw fail(name === undefined ? `several ${listKey} and no current-context` : `${listKey} has no entry named ${JSON.stringify(name)}`);
    const inner = pick[itemKey];
    if (!isObj(inner)) throw fail(`${listKey} entry ${JSON.stringify(pick.name ?? '')} has no ${itemKey}`);
    return inner;
  };

  let clusterName: string | undefined;
  let userName: string | undefined;
  const current = doc['current-context'];
  if (typeof current === 'string' && current !== '') {
    const ctx = named('contexts', 'context', current);
    clusterName = str(ctx.cluster);
    userName = str(ctx.user);
    if (clusterName === undefined) throw fail(`context ${JSON.stringify(current)} names no cluster`);
  }
  const cluster = named('clusters', 'cluster', clusterName);
  const server = str(cluster.server);
  if (!server) throw fail('the cluster has no server');
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    throw fail(`server ${JSON.stringify(server)} is not a URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw fail(`server ${JSON.stringify(server)} is not http(s)`);

  const insecure = cluster['insecure-skip-tls-verify'] === true || cluster['insecure-skip-tls-verify'] === 'true';
  let ca: string | undefined;
  const caData = str(cluster['certificate-authority-data']);
  const caFile = str(cluster['certificate-authority']);
  if (caData) ca = decodeBase64(caData, 'certificate-authority-data', fail);
  else if (caFile) ca = readVia(readFile, caFile, 'certificate-authority', fail);
  if (ca !== undefined && !ca.includes('-----BEGIN CERTIFICATE-----')) throw fail('the cluster CA is not a PEM certificate');

  let user: Obj = {};
  const users = doc.users;
  if (userName !== undefined || (Array.isArray(users) && users.length > 0)) user = named('users', 'user', userName);
  let token = str(user.token);
  const tokenFile = str(user.tokenFile);
  if (!token && tokenFile) token = readVia(readFile, tokenFile, 'tokenFile', fail).trim();
  const certData = str(user['client-certificate-data']);
  const keyData = str(user['client-key-data']);

  return {
    server: server.replace(/\/+$/, ''),
    insecureSkipTlsVerify: insecure,
    ...(ca !== undefined ? { ca } : {}),
    ...(str(cluster['tls-server-name']) ? { tlsServerName: str(cluster['tls-server-name']) } : {}),
    ...(token ? { token } : {}),
    ...(certData && keyData
      ? {
          clientCert: decodeBase64(certData, 'client-certificate-data', fail),
          clientKey: decodeBase64(keyData, 'client-key-data', fail),
        }
      : {}),
  };
}

function str(v: YamlValue | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function decodeBase64(s: string, key: string, fail: (why: string) => Error): string {
  if (!/^[A-Za-z0-9+/=\s]*$/.test(s)) throw fail(`${key} is not base64`);
  return Buffer.from(s, 'base64').toString('utf8');
}

function readVia(readFile: ReadFile | undefined, path: string, key: string, fail: (why: string) => Error): string {
  if (!readFile) throw fail(`${key} points to a file, which is not supported here`);
  try {
    return readFile(path);
  } catch (e) {
    throw fail(`cannot read ${key} ${path}: ${(e as Error).message}`);
  }
}
