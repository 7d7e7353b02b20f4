// A throwaway CA and a server certificate for 127.0.0.1/localhost, made with the openssl CLI,
// for tests that talk real TLS.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { tempDir } from './tmp';

export interface TestPki {
  ca: string;
  cert: string;
  key: string;
  /** A second CA that signed nothing here: a client trusting it must refuse the server. */
  otherCa: string;
}

export function makePki(): TestPki {
  const dir = tempDir(path.join(os.tmpdir(), 'icts-pki-'));
  const f = (n: string) => path.join(dir, n);
  const ossl = (...args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  try {
    for (const name of ['ca', 'other']) {
      ossl(
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        f(`${name}.key`),
        '-out',
        f(`${name}.crt`),
        '-days',
        '2',
        '-subj',
        `/CN=icts-test-${name}`,
      );
    }
    ossl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('srv.key'), '-out', f('srv.csr'), '-subj', '/CN=localhost');
    fs.writeFileSync(f('ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
    ossl(
      'x509',
      '-req',
      '-in',
      f('srv.csr'),
      '-CA',
      f('ca.crt'),
      '-CAkey',
      f('ca.key'),
      '-CAcreateserial',
      '-out',
      f('srv.crt'),
      '-days',
      '2',
      '-extfile',
      f('ext'),
    );
    return {
      ca: fs.readFileSync(f('ca.crt'), 'utf8'),
      cert: fs.readFileSync(f('srv.crt'), 'utf8'),
      key: fs.readFileSync(f('srv.key'), 'utf8'),
      otherCa: fs.readFileSync(f('other.crt'), 'utf8'),
    };
  } catch (e) {
    throw new Error(`these tests need the openssl CLI (apt-get install openssl): ${(e as Error).message}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The kubeconfig install-cni writes, in the YAML Go's emitter produces. */
export function istioKubeconfig(server: string, opts: { caPem?: string; insecure?: boolean; token?: string }): string {
  const cluster = opts.insecure
    ? '    insecure-skip-tls-verify: true\n'
    : `    certificate-authority-data: ${Buffer.from(opts.caPem ?? '').toString('base64')}\n`;
  return `apiVersion: v1
clusters:
- cluster:
${cluster}    server: ${server}
  name: local
contexts:
- context:
    cluster: local
    user: istio-cni
  name: istio-cni-context
current-context: istio-cni-context
kind: Config
preferences: {}
users:
- name: istio-cni
  user:
    token: ${opts.token ?? 'service_account_token_string'}
`;
}
