// `istio-cni-ts rules --dry-run --pod FILE`, run as a user runs it: the rules must be exactly
// what the plugin's ADD applies for that pod (checked against handleCni with fake dependencies and
// against Istio's effectiveConfig for the conformance pods), --explain must only add comments,
// skipped pods say why, bad annotations exit 2 naming annotation and value.
import { after, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { buildCapture } from '../../src/capture/build';
import { parseCaptureConfig } from '../../src/capture/config';
import { Pod } from '../../src/kube/pod';
import { render } from '../../src/nft/transaction';
import { handleCni } from '../../src/plugin/istio';
import { POD_NETNS, cniEnv, fakes, netconf, sidecarPod } from '../support/cni-fakes';
import { PACKAGE_ROOT, loadSuite } from '../support/conformance';
import { tempDir } from '../support/tmp';

const BIN = path.join(PACKAGE_ROOT, 'bin', 'istio-cni-ts.js');
const dir = tempDir(path.join(os.tmpdir(), 'icts-poddry-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

let n = 0;
function podFile(pod: unknown, format: 'yaml' | 'json' = 'yaml'): string {
  const p = path.join(dir, `pod-${n++}.${format}`);
  fs.writeFileSync(p, typeof pod === 'string' ? pod : format === 'yaml' ? YAML.stringify(pod) : JSON.stringify(pod, null, 2));
  return p;
}

function dry(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [BIN, 'rules', '--dry-run', ...args], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, encoding: 'utf8' });
}

/** What handleCni ADD hands to nft for this pod, with fake dependencies. */
async function pluginApplies(pod: Pod, opts: { dualStack?: boolean; env?: Record<string, string> } = {}): Promise<string> {
  const f = fakes([pod], { env: opts.env });
  if (opts.dualStack) f.dualStack.add(POD_NETNS);
  const args = `K8S_POD_NAMESPACE=${pod.metadata?.namespace};K8S_POD_NAME=${pod.metadata?.name}`;
  const out = await handleCni(cniEnv('ADD', { CNI_ARGS: args }), netconf(), f.deps);
  assert.equal(out.exitCode, 0, out.stdout);
  assert.equal(f.rules.applied.length, 1, 'the plugin applied one transaction');
  return render(f.rules.applied[0].tx);
}

/** The explained output without its comment lines and blank lines. */
const uncomment = (text: string) =>
  text
    .split('\n')
    .filter((l) => !l.startsWith('#') && l !== '')
    .join('\n') + '\n';

describe('conformance pods (Istio plugin-dryrun cases)', () => {
  for (const c of loadSuite('plugin-dryrun')) {
    test(`${c.case}: the dry run prints the rules of Istio's effectiveConfig, which are what ADD applies`, async () => {
      const want = render(buildCapture(parseCaptureConfig({ ...c.input.effectiveConfig, hostIP: '' })));
      for (const format of ['yaml', 'json'] as const) {
        const r = dry(['--pod', podFile(c.input.pod, format)]);
        assert.equal(r.status, 0, r.stderr);
        assert.equal(r.stdout, want, `${format}`);
      }
      assert.equal(await pluginApplies(c.input.pod as Pod), want);
      const e = dry(['--pod', podFile(c.input.pod), '--explain']);
      assert.equal(e.status, 0, e.stderr);
      assert.equal(uncomment(e.stdout), want, '--explain only adds comments');
    });
  }
});

describe('pods of our own', () => {
  const annotated = sidecarPod({
    name: 'web-1',
    annotations: {
      'sidecar.istio.io/interceptionMode': 'TPROXY',
      'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.96.0.0/12, 169.254.169.254/32',
      'traffic.sidecar.istio.io/includeInboundPorts': '8080,9090',
      'traffic.sidecar.istio.io/excludeOutboundPorts': '3306',
    },
    securityContext: { runAsUser: 1500, runAsGroup: 1600 },
    env: [{ name: 'ISTIO_META_DNS_CAPTURE', value: 'true' }],
  });

  test('--ipv6 gives the rules ADD applies in a dual-stack netns; without it, those of a single-stack one', async () => {
    const f = podFile(annotated);
    const v6 = dry(['--pod', f, '--ipv6']);
    assert.equal(v6.status, 0, v6.stderr);
    assert.equal(v6.stdout, await pluginApplies(annotated, { dualStack: true }));
    assert.match(v6.stdout, /ip6 daddr/);
    const v4 = dry(['--pod', f]);
    assert.equal(v4.stdout, await pluginApplies(annotated));
    assert.doesNotMatch(v4.stdout, /ip6 /);
  });

  test("the plugin's own environment counts, as in the plugin (owner groups, loopback CIDR)", async () => {
    const env = { ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE: '999', ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR: '127.0.0.0/8' };
    const r = dry(['--pod', podFile(annotated), '--explain'], env);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(uncomment(r.stdout), await pluginApplies(annotated, { env }));
    assert.match(r.stdout, /^# owner groups excluded +999 +environment variable ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE of the plugin$/m);
    assert.match(r.stdout, /^# IPv4 loopback CIDR +127\.0\.0\.0\/8 +environment variable ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR of the plugin$/m);
  });

  test('--explain names the annotation or setting behind each part', () => {
    const r = dry(['--pod', podFile(annotated), '--explain', '--ipv6']);
    assert.equal(r.status, 0, r.stderr);
    const out = r.stdout;
    // The settings table: value and origin.
    assert.match(out, /^# interception mode +TPROXY +annotation sidecar\.istio\.io\/interceptionMode$/m);
    assert.match(out, /^# outbound CIDRs excluded +10\.96\.0\.0\/12,169\.254\.169\.254\/32 +annotation traffic\.sidecar\.istio\.io\/excludeOutboundIPRanges$/m);
    assert.match(out, /^# inbound ports captured +8080,9090 +annotation traffic\.sidecar\.istio\.io\/includeInboundPorts$/m);
    assert.match(out, /^# inbound ports excluded +15020,15021,15090 +default 15020; 15020,15021,15090 always added$/m);
    assert.match(out, /^# proxy UID +1500 +istio-proxy securityContext\.runAsUser$/m);
    assert.match(out, /^# proxy GID +1600 +istio-proxy securityContext\.runAsGroup$/m);
    assert.match(out, /^# DNS capture \(all port 53\) +true +istio-proxy env ISTIO_META_DNS_CAPTURE$/m);
    assert.match(out, /^# IPv6 rules +true +--ipv6 \(simulates a dual-stack pod netns\)$/m);
    assert.match(out, /^# routes \(IPv4 and IPv6\): ip rule add fwmark 1337 lookup 133; ip route add local default dev lo table 133/m);
    assert.match(out, /^# address: ::6\/128 on lo/m);

    // Each rule is preceded by the nearest "# from:" line: check a few attributions.
    const fromOf = (re: RegExp): string => {
      const lines = out.split('\n');
      const i = lines.findIndex((l) => re.test(l));
      assert.ok(i >= 0, `no rule matches ${re}`);
      for (let j = i; j >= 0; j--) if (lines[j].startsWith('# from: ')) return lines[j].slice('# from: '.length);
      return '';
    };
    assert.match(fromOf(/ip daddr 10\.96\.0\.0\/12 counter return/), /outbound CIDRs excluded/);
    assert.match(fromOf(/ip daddr 169\.254\.169\.254\/32 counter return/), /outbound CIDRs excluded/);
    assert.match(fromOf(/tcp dport 3306 counter return/), /outbound ports excluded/);
    assert.match(fromOf(/tcp dport 8080 .*tproxy/), /inbound ports captured/);
    assert.match(fromOf(/skuid 1500 counter return/), /proxy UID/);
    assert.match(fromOf(/skgid 1600 counter return/), /proxy GID/);
    assert.match(fromOf(/dport 53 .*redirect to :15053|redirect to :15053/), /DNS capture/);
    assert.match(fromOf(/^add rule .*ip6 daddr/), /IPv6 rules/);
  });

  test('a kubectl get pod -o yaml document (status, managedFields, ...) is read as the API object', async () => {
    const kubectl = `apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubectl.kubernetes.io/default-container: app
    sidecar.istio.io/status: '{"initContainers":null,"containers":["istio-proxy"],"volumes":["istio-envoy"]}'
    traffic.sidecar.istio.io/excludeInboundPorts: "9901"
  creationTimestamp: "2024-05-01T10:00:00Z"
  labels:
    app: web
    security.istio.io/tlsMode: istio
  managedFields:
  - apiVersion: v1
    fieldsType: FieldsV1
    fieldsV1:
      f:metadata: {}
    manager: kubectl-client-side-apply
    operation: Update
  name: web-7d4b9c
  namespace: shop
  uid: 6a1f0c9e-1111-2222-3333-444455556666
spec:
  containers:
  - image: nginx:1.27
    name: app
    ports:
    - containerPort: 8080
      protocol: TCP
  - args:
    - proxy
    - sidecar
    - --domain
    - $(POD_NAMESPACE).svc.cluster.local
    env:
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    - name: ISTIO_META_DNS_CAPTURE
      value: "false"
    image: docker.io/istio/proxyv2:1.24.0
    name: istio-proxy
    securityContext:
      runAsGroup: 1337
      runAsNonRoot: true
      runAsUser: 1337
status:
  phase: Running
  podIP: 10.244.1.7
`;
    const r = dry(['--pod', podFile(kubectl)]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, await pluginApplies(YAML.parse(kubectl) as Pod));
    assert.match(r.stdout, /tcp dport 9901 counter return/);
  });

  test('pods the plugin leaves alone: exit 0, one comment line saying why, no rules', () => {
    const cases: [Pod, RegExp][] = [
      [{ metadata: { name: 'plain', namespace: 'shop' }, spec: { containers: [{ name: 'app' }] } }, /no istio-proxy container/],
      [sidecarPod({ initContainers: ['istio-init'] }), /istio-init container/],
      [sidecarPod({ labels: { 'sidecar.istio.io/inject': 'false' } }), /sidecar\.istio\.io\/inject is false/],
      [sidecarPod({ env: [{ name: 'DISABLE_ENVOY', value: 'true' }] }), /DISABLE_ENVOY=true/],
      [sidecarPod({ args: ['proxy', 'router'] }), /proxy type other than sidecar/],
      [{ ...sidecarPod(), metadata: { name: 'x', namespace: 'shop', annotations: {} } }, /no sidecar\.istio\.io\/status annotation/],
    ];
    for (const [pod, why] of cases) {
      for (const extra of [[], ['--explain']]) {
        const r = dry(['--pod', podFile(pod), ...extra]);
        assert.equal(r.status, 0, r.stderr);
        assert.equal(r.stdout.split('\n').length, 2, `one line: ${r.stdout}`);
        assert.match(r.stdout, /^# pod [^ ]+: no sidecar capture: /);
        assert.match(r.stdout, why);
      }
    }
  });

  test('an unparsable istio-proxy boolean is a warning on stderr (treated as false), as the plugin logs it', () => {
    const r = dry(['--pod', podFile(sidecarPod({ env: [{ name: 'INVALID_DROP', value: 'maybe' }] }))]);
    assert.equal(r.status, 0);
    assert.match(r.stderr, /warning: istio-proxy env INVALID_DROP="maybe" is not a boolean; treated as false/);
    assert.doesNotMatch(r.stdout, /drop/);
  });
});

describe('bad input: exit 2, one line naming the source and value, nothing on stdout', () => {
  const bad = (args: string[], ...names: string[]) => {
    const r = dry(args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    for (const s of names) assert.ok(r.stderr.includes(s), `stderr names ${s}: ${r.stderr}`);
  };
  const withAnnotation = (key: string, value: string) => podFile(sidecarPod({ annotations: { [key]: value } }));

  test('invalid annotations', () => {
    bad(
      ['--pod', withAnnotation('traffic.sidecar.istio.io/includeOutboundIPRanges', '10.0.0.0/8; flush ruleset')],
      'traffic.sidecar.istio.io/includeOutboundIPRanges',
      '"10.0.0.0/8; flush ruleset"',
    );
    bad(['--pod', withAnnotation('traffic.sidecar.istio.io/excludeInboundPorts', '1,,2')], 'traffic.sidecar.istio.io/excludeInboundPorts', '"1,,2"');
    bad(['--pod', withAnnotation('traffic.sidecar.istio.io/includeInboundPorts', '80,99999')], 'traffic.sidecar.istio.io/includeInboundPorts', '99999');
    bad(['--pod', withAnnotation('traffic.sidecar.istio.io/excludeInterfaces', 'eth 0')], 'traffic.sidecar.istio.io/excludeInterfaces', '"eth 0"');
    bad(['--pod', withAnnotation('sidecar.istio.io/interceptionMode', 'tproxy')], 'sidecar.istio.io/interceptionMode', '"tproxy"');
    bad(['--pod', withAnnotation('traffic.sidecar.istio.io/excludeOutboundPorts', '*')], 'traffic.sidecar.istio.io/excludeOutboundPorts', '"*"');
  });

  test('invalid plugin environment', () => {
    const r = dry(['--pod', podFile(sidecarPod())], { ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR: '10.0.0.0/8' });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR "10\.0\.0\.0\/8"/);
  });

  test('files that are not one Pod', () => {
    bad(['--pod', path.join(dir, 'missing.yaml')], '--pod', 'missing.yaml', 'cannot read');
    bad(['--pod', podFile('metadata: [unclosed\n')], '--pod', 'not a readable YAML or JSON document');
    bad(['--pod', podFile('{"kind": "Pod",', 'json')], '--pod', 'not a readable YAML or JSON document');
    bad(['--pod', podFile('kind: List\nitems: []\n')], '--pod', 'List');
    bad(['--pod', podFile('kind: Deployment\nspec: {}\n')], '--pod', '"Deployment"');
    bad(['--pod', podFile(`${YAML.stringify(sidecarPod())}---\n${YAML.stringify(sidecarPod())}`)], '--pod', 'expected one YAML document, found 2');
    bad(['--pod', podFile('- a\n- b\n')], '--pod', 'expected a Pod object');
  });

  test('flags that do not go with --pod', () => {
    const f = podFile(sidecarPod());
    bad(['--pod', f, '-p', '15002'], '--pod', '--envoy-port');
    bad(['--pod', f, '--ambient', 'pod'], '--pod', '--ambient');
    bad(['--explain'], '--explain', 'needs --pod');
  });
});
