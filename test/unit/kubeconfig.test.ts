import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { KubeconfigError, parseKubeconfig } from '../../src/kube/kubeconfig';
import { YamlError, parseYamlLite } from '../../src/kube/yaml-lite';
import { istioKubeconfig } from '../support/tls';

const PEM = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';

test('install-cni kubeconfig with CA data: server, CA, token', () => {
  const ep = parseKubeconfig(istioKubeconfig('https://10.96.0.1:443', { caPem: PEM, token: 'tok-123' }), 'kc');
  assert.deepEqual(ep, { server: 'https://10.96.0.1:443', insecureSkipTlsVerify: false, ca: PEM, token: 'tok-123' });
});

test('install-cni kubeconfig with insecure-skip-tls-verify', () => {
  const ep = parseKubeconfig(istioKubeconfig('https://[fd00::1]:6443', { insecure: true }), 'kc');
  assert.deepEqual(ep, { server: 'https://[fd00::1]:6443', insecureSkipTlsVerify: true, token: 'service_account_token_string' });
});

test('the same kubeconfig as JSON, and with quoting, comments and other layouts', () => {
  const json = JSON.stringify({
    apiVersion: 'v1',
    kind: 'Config',
    'current-context': 'c',
    clusters: [{ name: 'k', cluster: { server: 'https://k:443', 'certificate-authority-data': Buffer.from(PEM).toString('base64') } }],
    contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }],
    users: [{ name: 'u', user: { token: 't' } }],
  });
  assert.deepEqual(parseKubeconfig(json, 'kc'), { server: 'https://k:443', insecureSkipTlsVerify: false, ca: PEM, token: 't' });

  const yaml = `# written by hand
apiVersion: "v1"
kind: 'Config'
current-context: "ctx" # trailing comment
clusters:
  - name: other
    cluster:
      server: https://other:1
  - name: mine
    cluster:
      server: "https://mine:6443/"
      insecure-skip-tls-verify: true
contexts:
  - name: ctx
    context: {cluster: mine, user: me}
users:
  - name: me
    user:
      token: 'it''s # not a comment'
`;
  // Flow mappings with content are refused rather than guessed at.
  assert.throws(
    () => parseKubeconfig(yaml, 'kc'),
    (e: Error) => e instanceof KubeconfigError && /unsupported YAML/.test(e.message),
  );
  const block = yaml.replace('    context: {cluster: mine, user: me}', '    context:\n      cluster: mine\n      user: me');
  assert.deepEqual(parseKubeconfig(block, 'kc'), {
    server: 'https://mine:6443',
    insecureSkipTlsVerify: true,
    token: "it's # not a comment",
  });
});

test('token and CA from files when the kubeconfig points to them', () => {
  const files: Record<string, string> = { '/ca.crt': PEM, '/token': 'filetok\n' };
  const text = `clusters:\n- name: a\n  cluster:\n    server: https://a\n    certificate-authority: /ca.crt\nusers:\n- name: u\n  user:\n    tokenFile: /token\n`;
  const ep = parseKubeconfig(text, 'kc', (p) => {
    if (!(p in files)) throw new Error('ENOENT');
    return files[p];
  });
  assert.deepEqual(ep, { server: 'https://a', insecureSkipTlsVerify: false, ca: PEM, token: 'filetok' });
});

test('unusable kubeconfigs are errors naming the file and the problem, never the token', () => {
  const cases: [string, RegExp][] = [
    ['', /top level/],
    ['just text', /key: value|top level/],
    ['clusters: []\n', /no clusters/],
    ['current-context: x\ncontexts: []\n', /no contexts/],
    [istioKubeconfig('ftp://x', { insecure: true, token: 'SECRET' }), /not http/],
    [istioKubeconfig('https://x', { caPem: 'not a pem', token: 'SECRET' }), /not a PEM/],
    [
      istioKubeconfig('https://x', { insecure: true, token: 'SECRET' }).replace('current-context: istio-cni-context', 'current-context: nope'),
      /no entry named "nope"/,
    ],
    ['a: 1\n\tb: 2\n', /tabs/],
    ['a: 1\na: 2\n', /duplicate key/],
    ['a: |\n  x\n', /unsupported YAML/],
    ['a: "open\n', /unterminated/],
  ];
  for (const [text, re] of cases) {
    assert.throws(
      () => parseKubeconfig(text, '/var/run/istio-cni/istio-cni-kubeconfig'),
      (e: Error) => {
        assert.ok(e instanceof KubeconfigError, String(e));
        assert.match(e.message, /\/var\/run\/istio-cni\/istio-cni-kubeconfig/);
        assert.match(e.message, re);
        assert.ok(!e.message.includes('SECRET'), e.message);
        return true;
      },
      text,
    );
  }
});

test("yaml-lite: the structures Go's emitter writes", () => {
  assert.deepEqual(parseYamlLite('a:\n- x\n- y: 1\n  z: "q"\n-\n  - n\nb: {}\nc: []\nd: ~\ne: false\n'), {
    a: ['x', { y: '1', z: 'q' }, ['n']],
    b: {},
    c: [],
    d: null,
    e: false,
  });
  assert.deepEqual(parseYamlLite('---\nk: "a\\tb\\u0041"\n'), { k: 'a\tbA' });
  assert.deepEqual(parseYamlLite('url: http://h:80/p#frag\n'), { url: 'http://h:80/p#frag' });
  assert.throws(() => parseYamlLite('a: &x 1\n'), YamlError);
  assert.throws(() => parseYamlLite('a: 1\n---\nb: 2\n'), YamlError);
  assert.throws(() => parseYamlLite('a:\n    b: 1\n  c: 2\n'), YamlError);
});
