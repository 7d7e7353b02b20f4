// The kubeconfig Istio's install-cni writes to <cni_agent_run_dir>/istio-cni-kubeconfig: one
// cluster (server, CA data or insecure-skip-tls-verify), one user (bearer token), one context.
// Parsed into what a single HTTPS GET needs. Error messages never include the token.
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
  constructor(readonly file: string, why: string) {
    super(`kubeconfig ${file}: ${why}`);
    this.name = 'KubeconfigError';
  }
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
