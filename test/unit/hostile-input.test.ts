// Hostile input, property-based (fast-check): pod annotations, CNI stdin, CNI_ARGS, capture
// flags and the socket payload decoders get thousands of generated values - nft syntax, huge
// values, unicode and control characters. For every value: either a clear error that names the
// source and the value (and nothing was applied), or rules whose every token is from a fixed
// vocabulary or a value derived from the typed input.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import fc from 'fast-check';
import { buildCapture } from '../../src/capture/build';
import { CaptureConfig } from '../../src/capture/config';
import { FIELDS } from '../../src/capture/fields';
import { flagLayer, resolveCaptureConfig } from '../../src/capture/sources';
import { ErrorCode } from '../../src/cni/errors';
import { PluginErrorCode } from '../../src/plugin/errors';
import { render } from '../../src/nft/transaction';
import { handleCni, planSidecar } from '../../src/plugin/istio';
import { Annotation, extractPodInfo } from '../../src/redirect';
import { InputError } from '../../src/values/errors';
import { parseCniAddEvent, CniEventError } from '../../src/ambient/cni-event';
import { decodeHello, decodeResponse, ZdsDecodeError } from '../../src/zds/messages';
import { POD_NETNS, cniEnv, fakes, netconf, sidecarPod } from '../support/cni-fakes';

const RUNS = Number(process.env.ICTS_FC_RUNS ?? 2000);
const SEED = Number(process.env.ICTS_FC_SEED ?? 20261126);

// ---------------------------------------------------------------------------------------------
// Generators

/** Fragments that mean something to nft, a shell, a log reader or a JSON parser. */
const NASTY = [
  ';',
  '\n',
  '\r',
  '{',
  '}',
  '"',
  "'",
  '#',
  '\\',
  '\0',
  '\t',
  ' ',
  ',',
  '*',
  '$',
  '@',
  '/',
  ':',
  '=',
  '!=',
  '\u2028',
  '\u2029',
  '\u0085',
  '\u202e',
  '\u00a0',
  '\ufeff',
  '\u007f',
  '\ud800',
  'é',
  '🙂',
  '٣',
  'accept',
  'drop',
  'counter',
  'jump',
  'flush ruleset',
  'add rule inet x y',
  'meta mark set 1',
  '80',
  '0',
  '65535',
  '65536',
  '-1',
  '0x50',
  '1e3',
  '08',
  '15001',
  '1337',
  '10.0.0.0/8',
  '1.2.3.4',
  '1.2.3.4/33',
  '::1',
  'fd00::/8',
  'fd00:0::1/128',
  '::ffff:1.2.3.4/128',
  '256.0.0.1/8',
  'eth0',
  'lo',
  'veth.1',
  'a-b_c',
  'x'.repeat(16),
  'REDIRECT',
  'TPROXY',
  'tproxy',
];

/** Values that should be accepted, so the accepted branch is exercised too. */
const validPort = fc.integer({ min: 1, max: 65535 }).map(String);
const validCidr = fc.oneof(
  fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(32)).map(([a, b, c, d, m]) => `${a}.${b}.${c}.${d}/${m}`),
  fc.tuple(fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 }), fc.nat(128)).map(([g, m]) => `${g.map((x) => x.toString(16)).join(':')}/${m}`),
);
const validIf = fc.stringMatching(/^[a-z][a-z0-9_.-]{0,14}$/);
const listOf = (a: fc.Arbitrary<string>) =>
  fc.tuple(fc.array(a, { minLength: 1, maxLength: 6 }), fc.constantFrom(',', ', ', ' , ')).map(([xs, sep]) => xs.join(sep));

const huge = fc.constantFrom(
  '80,'.repeat(30_000) + '80',
  'a'.repeat(100_000),
  '1'.repeat(70_000),
  '10.0.0.0/8,'.repeat(5_000) + '{',
  'eth0,'.repeat(10_000),
  ';'.repeat(50_000),
  '\n'.repeat(20_000),
  '🙂'.repeat(20_000),
);

const hostile: fc.Arbitrary<string> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.array(fc.oneof(fc.constantFrom(...NASTY), fc.string({ unit: 'binary', maxLength: 4 })), { maxLength: 10 }).map((xs) => xs.join('')),
  },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom(...';{}"\'#\n\r\t\\ ,*/:0123456789abcdefx.-'), maxLength: 30 }) },
  { weight: 2, arbitrary: fc.oneof(listOf(validPort), listOf(validCidr), listOf(validIf), fc.constant('*'), fc.constant('')) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.oneof(listOf(validPort), listOf(validCidr), listOf(validIf)), fc.constantFrom(...NASTY), fc.nat(3))
      .map(([v, bad, where]) => (where === 0 ? bad + v : where === 1 ? v + bad : where === 2 ? v.replace(',', `,${bad}`) : v.replace(/^./, bad))),
  },
  { weight: 1, arbitrary: huge },
);

// ---------------------------------------------------------------------------------------------
// The rule-text check

/** Every word the capture builder writes on its own account. */
const VOCAB = new Set([
  'add',
  'flush',
  'insert',
  'delete',
  'table',
  'chain',
  'rule',
  'index',
  'inet',
  'ip',
  'ip6',
  '{',
  '}',
  ';',
  'type',
  'nat',
  'filter',
  'route',
  'hook',
  'prerouting',
  'input',
  'forward',
  'output',
  'postrouting',
  'priority',
  'iifname',
  'oifname',
  'lo',
  'counter',
  'return',
  'jump',
  'goto',
  'meta',
  'l4proto',
  'tcp',
  'udp',
  'dport',
  'sport',
  'redirect',
  'to',
  'saddr',
  'daddr',
  '!=',
  'skuid',
  'skgid',
  'ct',
  'state',
  'invalid',
  'drop',
  'mark',
  'set',
  'accept',
  'tproxy',
  'zone',
  'related,established',
  'established',
  'related',
  'istio-proxy-nat',
  'istio-proxy-mangle',
  'istio-proxy-raw',
  'istio-inbound',
  'istio-redirect',
  'istio-in-redirect',
  'istio-output',
  'istio-output-dns',
  'istio-divert',
  'istio-tproxy',
  'istio-drop',
]);
/** Numbers the builder uses itself: DNS, agent ports, marks, priorities, chain indexes. */
const CONSTANT_NUMBERS = ['53', '15053', '1338', '-100', '-150', '-300', '1', '2', '0', '3', '4', '5'];
const CONSTANT_CIDRS = ['127.0.0.6/32', '::6/128', '::1/128', '127.0.0.1/32'];

function allowedFrom(cfg: CaptureConfig) {
  const nums = new Set<string>(CONSTANT_NUMBERS);
  const ports = (x: '*' | readonly number[]) => (x === '*' ? [] : x);
  for (const n of [
    cfg.proxyPort,
    cfg.inboundCapturePort,
    cfg.inboundTunnelPort,
    cfg.iptablesProbePort,
    cfg.inboundTProxyMark,
    cfg.inboundTProxyRouteTable,
    ...cfg.proxyUIDs,
    ...cfg.proxyGIDs,
    ...ports(cfg.inboundPortsInclude),
    ...cfg.inboundPortsExclude,
    ...cfg.outboundPortsInclude,
    ...cfg.outboundPortsExclude,
  ])
    nums.add(String(n));
  const cidrs = new Set<string>(CONSTANT_CIDRS);
  for (const c of [...(cfg.outboundIPRangesInclude === '*' ? [] : cfg.outboundIPRangesInclude), ...cfg.outboundIPRangesExclude, cfg.hostIPv4LoopbackCidr])
    cidrs.add(c.text);
  for (const d of cfg.dnsServersV4) cidrs.add(`${d.text}/32`);
  for (const d of cfg.dnsServersV6) cidrs.add(`${d.text}/128`);
  const names = new Set<string>([
    ...cfg.rerouteVirtualInterfaces,
    ...cfg.excludeInterfaces,
    ...(cfg.ownerGroupsInclude === '*' ? [] : cfg.ownerGroupsInclude),
    ...cfg.ownerGroupsExclude,
  ]);
  return { nums, cidrs, names };
}

/** Throws unless every token of the rule text is vocabulary or a typed value of cfg. */
function checkRuleText(text: string, cfg: CaptureConfig): void {
  assert.ok(/^[\x20-\x7e\n]*$/.test(text), 'rule text is printable ASCII');
  assert.ok(!text.includes('#') && !text.includes('"') && !text.includes("'") && !text.includes('\\'), 'no comments, quotes or escapes');
  const { nums, cidrs, names } = allowedFrom(cfg);
  for (const line of text.split('\n')) {
    if (line === '') continue;
    assert.match(line, /^(add|flush|insert|delete) /, `line starts with a verb: ${line}`);
    for (const raw of line.split(' ')) {
      if (raw === '') continue;
      const tok = raw.endsWith(',') && raw !== ',' ? raw.slice(0, -1) : raw;
      if (VOCAB.has(tok)) continue;
      // A typed interface or group name may look like a number ("80" is a valid interface name).
      if (names.has(tok)) {
        assert.match(tok, /^[A-Za-z0-9_][A-Za-z0-9_.$-]{0,31}$/, 'names are plain words');
        continue;
      }
      if (/^-?[0-9]{1,10}$/.test(tok)) {
        assert.ok(nums.has(tok), `number ${tok} is a typed value (line: ${line})`);
        continue;
      }
      if (/^:[0-9]{1,5}$/.test(tok)) {
        assert.ok(nums.has(tok.slice(1)), `port ${tok} is a typed value`);
        continue;
      }
      if (tok.includes('/')) {
        assert.ok(cidrs.has(tok), `CIDR ${tok} is a canonical typed CIDR (line: ${line})`);
        continue;
      }
      assert.fail(`token ${JSON.stringify(tok)} is neither vocabulary nor a typed value (line: ${line})`);
    }
  }
}

/** What InputError prints for a value (errors.ts shortens values over 200 characters). */
// JSON with the characters JSON.stringify leaves raw but readers take as a line break or a
// reordering (C1 controls, U+2028/9, bidi controls) escaped too.
const shown = (v: unknown) =>
  JSON.stringify(typeof v === 'string' && v.length > 200 ? `${v.slice(0, 200)}…` : v).replace(
    /[\u007f-\u009f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
/** No line break of any kind, no bidi control: what a log line must be. */
const ONE_LINE_BREAKERS = /[\n\r\u0085\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

/** A clear error: one line, naming the source and the value. */
function checkInputError(e: unknown, sources: readonly string[], values: readonly string[]): InputError {
  assert.ok(e instanceof InputError, `an InputError, not ${(e as Error)?.stack ?? String(e)}`);
  assert.ok(sources.includes(e.source), `source ${e.source} is one of ${sources.join(', ')}`);
  assert.ok(
    typeof e.value === 'string' && values.some((v) => v === e.value || v.includes(e.value as string)),
    `the error carries the value given (${shown(e.value)})`,
  );
  assert.ok(e.message.includes(e.source) && e.message.includes(shown(e.value)), 'message names source and value');
  assert.ok(!ONE_LINE_BREAKERS.test(e.message), `message is one line: ${JSON.stringify(e.message)}`);
  return e;
}

interface Counts {
  tried: number;
  accepted: number;
  errors: number;
}
const counts = (): Counts => ({ tried: 0, accepted: 0, errors: 0 });
// `tried` counts generated values; accepted + errors counts the cases (a case may carry several values).
const report = (t: { diagnostic: (m: string) => void }, what: string, c: Counts) =>
  t.diagnostic(
    `${what}: ${c.tried} values tried in ${c.accepted + c.errors} cases; ${c.accepted} accepted (output checked), ${c.errors} refused with a clear error`,
  );

// ---------------------------------------------------------------------------------------------
// Pod annotations, through ADD: annotation -> Redirect -> CaptureConfig -> buildCapture -> render -> apply

const SIDECAR_KEYS = [
  Annotation.interceptionMode,
  Annotation.includeOutboundIPRanges,
  Annotation.excludeOutboundIPRanges,
  Annotation.includeInboundPorts,
  Annotation.excludeInboundPorts,
  Annotation.includeOutboundPorts,
  Annotation.excludeOutboundPorts,
  Annotation.excludeInterfaces,
  Annotation.rerouteVirtualInterfaces,
  Annotation.kubevirtInterfaces,
];

test('pod annotations: ADD applies rules of typed values only, or fails naming the annotation and applies nothing', async (t) => {
  const c = counts();
  const annotations = fc.dictionary(fc.constantFrom(...SIDECAR_KEYS), fc.oneof(hostile, fc.constantFrom('REDIRECT', 'TPROXY')), { minKeys: 1, maxKeys: 4 });
  await fc.assert(
    fc.asyncProperty(annotations, async (a) => {
      c.tried += Object.keys(a).length;
      const pod = sidecarPod({ annotations: a });
      const f = fakes([pod]);
      const out = await handleCni(cniEnv('ADD'), netconf(), f.deps);
      let planErr: unknown;
      let cfg: CaptureConfig | undefined;
      try {
        const p = planSidecar(extractPodInfo(pod), { netnsPath: POD_NETNS, enableIPv6: false });
        assert.ok(p.capture);
        cfg = p.config;
      } catch (e) {
        planErr = e;
      }
      if (cfg) {
        assert.equal(out.exitCode, 0, out.stdout);
        assert.equal(f.rules.applied.length, 1);
        const text = render(f.rules.applied[0].tx);
        assert.equal(text, render(buildCapture(cfg)), 'what was applied is what the typed config renders');
        checkRuleText(text, cfg);
        // The typed values are what the annotation meant.
        const inc = a[Annotation.includeInboundPorts];
        if (inc !== undefined && inc.trim() !== '*') {
          assert.deepEqual(cfg.inboundPortsInclude, inc.trim() === '' ? [] : inc.split(',').map((x) => Number(x.trim())));
        }
        const exc = a[Annotation.excludeOutboundIPRanges];
        if (exc !== undefined && exc.trim() !== '') assert.equal(cfg.outboundIPRangesExclude.length, exc.split(',').length);
        c.accepted++;
      } else {
        const cause = (planErr as { cause?: unknown }).cause ?? planErr;
        const ie = checkInputError(
          cause,
          SIDECAR_KEYS.map((k) => `annotation ${k}`),
          Object.values(a),
        );
        assert.notEqual(out.exitCode, 0);
        const doc = JSON.parse(out.stdout);
        assert.equal(doc.code, PluginErrorCode.InvalidPodSettings);
        assert.ok(`${doc.msg} ${doc.details}`.includes(ie.message), 'the runtime sees the message');
        assert.equal(f.rules.applied.length, 0, 'nothing applied on an error');
        assert.equal(f.rules.routes.length, 0);
        c.errors++;
      }
    }),
    { numRuns: RUNS, seed: SEED },
  );
  report(t, 'annotations (values)', c);
  assert.ok(c.accepted > 50 && c.errors > 50, 'both branches exercised');
});

// ---------------------------------------------------------------------------------------------
// CNI stdin through handleCni

const BASE = JSON.parse(netconf());
const baselineRules = (async () => {
  const f = fakes([sidecarPod()]);
  await handleCni(cniEnv('ADD'), netconf(), f.deps);
  return render(f.rules.applied[0].tx);
})();

const jsonValue: fc.Arbitrary<unknown> = fc.oneof(
  hostile,
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.array(hostile, { maxLength: 3 }),
  fc.dictionary(hostile, hostile, { maxKeys: 3 }),
);

test("CNI stdin: ADD either applies exactly the pod's rules or returns a CNI error naming the key, never throws", async (t) => {
  const c = counts();
  const expected = await baselineRules;
  const keys = [...Object.keys(BASE), 'pod_lookup_attempts', 'pod_lookup_interval_ms', 'enable_ambient_detection_retry', 'kubernetes', 'runtimeConfig', 'args'];
  const stdin = fc.oneof(
    {
      weight: 4,
      arbitrary: fc
        .dictionary(fc.constantFrom(...keys), jsonValue, { minKeys: 1, maxKeys: 3 })
        .map((over) => ({ over, text: JSON.stringify({ ...BASE, ...over }) })),
    },
    { weight: 1, arbitrary: hostile.map((text) => ({ over: undefined, text })) },
    {
      weight: 1,
      arbitrary: fc.tuple(hostile, fc.nat(400)).map(([junk, at]) => {
        const s = netconf();
        return { over: undefined, text: s.slice(0, at) + junk + s.slice(at) };
      }),
    },
  );
  await fc.assert(
    fc.asyncProperty(stdin, async ({ over, text }) => {
      c.tried++;
      const f = fakes([sidecarPod()]);
      const out = await handleCni(cniEnv('ADD'), text, f.deps);
      const doc = JSON.parse(out.stdout);
      if (out.exitCode === 0) {
        if (f.rules.applied.length > 0) assert.equal(render(f.rules.applied[0].tx), expected, 'stdin never changes the rules');
        c.accepted++;
      } else {
        assert.equal(typeof doc.code, 'number');
        assert.equal(typeof doc.msg, 'string');
        assert.ok(!doc.msg.includes('\n'));
        assert.equal(f.rules.applied.length, 0, 'nothing applied on an error');
        if (over && doc.code === ErrorCode.InvalidConfig) {
          const said = `${doc.msg} ${doc.details ?? ''}`;
          assert.ok(
            Object.keys(over).some((k) => said.includes(k)),
            `the error names the key: ${said}`,
          );
        }
        c.errors++;
      }
    }),
    { numRuns: RUNS, seed: SEED },
  );
  report(t, 'CNI stdin (documents)', c);
});

// ---------------------------------------------------------------------------------------------
// CNI_ARGS through handleCni

test("CNI_ARGS: a hostile pod name/namespace reaches only the API lookup; rules are the pod's, or a CNI_ARGS error", async (t) => {
  const c = counts();
  const name = fc.oneof(hostile, fc.constant('web-1'));
  const ns = fc.oneof(hostile, fc.constant('shop'));
  const args = fc.oneof(
    {
      weight: 3,
      arbitrary: fc
        .tuple(name, ns, fc.oneof(hostile, fc.constant('u-1')))
        .map(([n, s, u]) => ({ n, s, text: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${s};K8S_POD_NAME=${n};K8S_POD_UID=${u}` })),
    },
    { weight: 1, arbitrary: hostile.map((text) => ({ n: undefined, s: undefined, text })) },
  );
  await fc.assert(
    fc.asyncProperty(args, async ({ n, s, text }) => {
      c.tried++;
      const f = fakes(n !== undefined && s !== undefined ? [sidecarPod({ name: n, namespace: s })] : []);
      const out = await handleCni(cniEnv('ADD', { CNI_ARGS: text }), netconf(), f.deps);
      if (out.exitCode === 0) {
        if (f.rules.applied.length > 0) {
          assert.equal(render(f.rules.applied[0].tx), await baselineRules, 'CNI_ARGS never changes the rules');
          assert.deepEqual(f.kube.calls, [`${s}/${n}`], 'the lookup used exactly the given names');
        }
        c.accepted++;
      } else {
        const doc = JSON.parse(out.stdout);
        assert.equal(f.rules.applied.length, 0, 'nothing applied on an error');
        assert.ok([ErrorCode.InvalidEnvironment, PluginErrorCode.PodLookupFailed].includes(doc.code), out.stdout);
        if (doc.code === ErrorCode.InvalidEnvironment) assert.match(doc.msg, /CNI_ARGS/);
        c.errors++;
      }
    }),
    { numRuns: RUNS, seed: SEED },
  );
  report(t, 'CNI_ARGS', c);
});

// ---------------------------------------------------------------------------------------------
// Capture flags through the layers (flag -> raw config -> parseCaptureConfig -> rules)

const STRING_FLAGS = FIELDS.filter((f) => f.flag && f.kind !== 'bool' && f.key !== 'networkNamespace').map((f) => f.flag!);

function flagsConfig(flags: Record<string, string>): CaptureConfig {
  return resolveCaptureConfig([flagLayer(flags)], '/nonexistent/resolv.conf');
}

test('capture flags: rules of typed values only, or an error naming the flag and the value', async (t) => {
  const c = counts();
  const flags = fc.dictionary(fc.constantFrom(...STRING_FLAGS), hostile, { minKeys: 1, maxKeys: 4 });
  fc.assert(
    fc.property(flags, fc.boolean(), (fl, v6) => {
      c.tried += Object.keys(fl).length;
      let cfg: CaptureConfig;
      try {
        cfg = resolveCaptureConfig([{ ...flagLayer(fl), values: { ...flagLayer(fl).values, enableIPv6: v6 } }], '/nonexistent/resolv.conf');
      } catch (e) {
        checkInputError(
          e,
          Object.keys(fl).map((k) => `--${k}`),
          Object.values(fl),
        );
        c.errors++;
        return;
      }
      checkRuleText(render(buildCapture(cfg)), cfg);
      const p = fl['istio-local-outbound-ports-exclude'];
      if (p !== undefined)
        assert.deepEqual(
          cfg.outboundPortsExclude,
          p
            .split(',')
            .map((x) => x.trim())
            .filter((x) => x)
            .map(Number),
        );
      c.accepted++;
    }),
    { numRuns: RUNS * 2, seed: SEED },
  );
  report(t, 'capture flags (values)', c);
  assert.ok(c.accepted > 50 && c.errors > 50, 'both branches exercised');
});

test('capture flags through the real binary (rules --dry-run): same rules as the library, or exit != 0 naming the flag', async (t) => {
  const bin = path.resolve(__dirname, '../../../bin/istio-cni-ts.js');
  const samples = fc.sample(
    fc.tuple(
      fc.constantFrom(...STRING_FLAGS),
      hostile.filter((v) => !v.includes('\0') && v.length < 20_000),
    ),
    { numRuns: Number(process.env.ICTS_FC_BIN_RUNS ?? 120), seed: SEED },
  );
  const c = counts();
  const run = (flag: string, value: string) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        [bin, 'rules', '--dry-run', `--${flag}=${value}`],
        { env: { PATH: process.env.PATH }, maxBuffer: 1 << 24 },
        (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
      );
    });
  let next = 0;
  const worker = async () => {
    while (next < samples.length) {
      const [flag, value] = samples[next++];
      c.tried++;
      const r = await run(flag, value);
      let cfg: CaptureConfig | undefined;
      let err: unknown;
      try {
        cfg = flagsConfig({ [flag]: value, 'dry-run': true } as Record<string, string>);
      } catch (e) {
        err = e;
      }
      if (cfg) {
        assert.equal(r.code, 0, `--${flag}=${JSON.stringify(value)}: ${r.stderr}`);
        assert.equal(r.stdout.trimEnd(), render(buildCapture(cfg)).trimEnd(), 'the binary prints what the library builds');
        c.accepted++;
      } else {
        assert.notEqual(r.code, 0, `--${flag}=${JSON.stringify(value)} must fail`);
        assert.ok(r.stderr.includes(`--${flag}`), `stderr names --${flag}: ${r.stderr.slice(0, 300)}`);
        assert.equal(r.stdout, '', 'no rules printed on an error');
        assert.ok(err instanceof InputError);
        c.errors++;
      }
    }
  };
  await Promise.all([worker(), worker(), worker()]);
  report(t, 'binary runs (rules --dry-run)', c);
});

// ---------------------------------------------------------------------------------------------
// Socket payload decoders: the CNI event body (pluginevent.sock) and ztunnel's ZDS records

test('CNI event body (pluginevent.sock): parsed into typed values or a CniEventError, nothing else', async (t) => {
  const c = counts();
  const ipObj = fc.record({
    Interface: fc.oneof(fc.integer(), fc.constant(null), hostile as fc.Arbitrary<unknown>, fc.double()),
    Address: fc.oneof(
      fc.record({
        IP: fc.oneof(hostile, fc.constantFrom('10.0.0.2', 'fd00::2')),
        Mask: fc.oneof(
          hostile,
          fc.uint8Array({ maxLength: 20 }).map((b) => Buffer.from(b).toString('base64')),
          fc.constantFrom('////AA==', '/////w=='),
        ),
      }),
      hostile as fc.Arbitrary<unknown>,
    ),
    Gateway: fc.oneof(hostile, fc.constantFrom('10.0.0.1', ''), fc.constant(null) as fc.Arbitrary<unknown>),
  });
  const body = fc.oneof(
    {
      weight: 3,
      arbitrary: fc
        .record({
          Netns: fc.oneof(hostile, fc.constant('/var/run/netns/p')),
          PodName: hostile,
          PodNamespace: hostile,
          IPs: fc.oneof(fc.array(ipObj, { maxLength: 3 }), jsonValue),
        })
        .map((o) => JSON.stringify(o)),
    },
    { weight: 1, arbitrary: hostile },
  );
  fc.assert(
    fc.property(body, (b) => {
      c.tried++;
      try {
        const e = parseCniAddEvent(b);
        assert.ok(e.netns === '' || (e.netns.startsWith('/') && !e.netns.includes('\0') && !e.netns.split('/').includes('..')));
        for (const ip of e.ips) {
          const max = ip.address.family === 4 ? 32 : 128;
          assert.ok(
            Number.isInteger(ip.prefixLength) && ip.prefixLength >= 0 && ip.prefixLength <= max,
            `prefix length ${ip.prefixLength} fits an IPv${ip.address.family} address (body ${b})`,
          );
        }
        c.accepted++;
      } catch (e) {
        assert.ok(e instanceof CniEventError, String(e));
        assert.ok(!ONE_LINE_BREAKERS.test(e.message), `one-line message: ${JSON.stringify(e.message)}`);
        c.errors++;
      }
    }),
    { numRuns: RUNS, seed: SEED },
  );
  report(t, 'CNI event bodies', c);
});

test('ZDS records from ztunnel: decoded or a ZdsDecodeError, never another exception', async (t) => {
  const c = counts();
  // Large records (60-70 KB) are few: generating them dominates the run time.
  const record = fc.oneof(
    { weight: 10, arbitrary: fc.uint8Array({ maxLength: 64 }) },
    { weight: 1, arbitrary: fc.integer({ min: 60_000, max: 70_000 }).chain((n) => fc.constantFrom(0x0a, 0x08, 0xff).map((b) => new Uint8Array(n).fill(b))) },
    { weight: 1, arbitrary: fc.uint8Array({ minLength: 1000, maxLength: 4000 }) },
    {
      weight: 10,
      arbitrary: fc.array(fc.constantFrom(0x08, 0x0a, 0x12, 0x1a, 0xff, 0x80, 0x01, 0x00, 0x7f), { maxLength: 40 }).map((a) => Uint8Array.from(a)),
    },
  );
  fc.assert(
    fc.property(record, (bytes) => {
      c.tried++;
      const data = Buffer.from(bytes);
      for (const decode of [decodeHello, decodeResponse] as ((d: Buffer) => unknown)[]) {
        try {
          const r = decode(data) as { version?: unknown; error?: unknown };
          assert.equal(typeof (r.version ?? r.error), 'string');
          c.accepted++;
        } catch (e) {
          assert.ok(e instanceof ZdsDecodeError, String(e));
          c.errors++;
        }
      }
    }),
    { numRuns: RUNS, seed: SEED },
  );
  report(t, 'ZDS records (x2 decoders)', c);
});

// ---------------------------------------------------------------------------------------------
// The CNI fast-path socket (cni-shim.sock): request records -> env + stdin -> handleCni

test('cni-shim.sock request records: header refused or within limits; body -> env/stdin -> ADD obeys the same property', async (t) => {
  const { parseHeader, parseBody, REQUEST_MAGIC, MAX_ENV_BYTES, MAX_STDIN_BYTES } = await import('../../src/agent/cni-server');
  const c = counts();
  const header = fc.oneof(
    fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)),
    fc.tuple(fc.nat(0xffffffff), fc.nat(0xffffffff), fc.nat(0xffffffff)).map(([e, s, n]) => {
      const b = Buffer.alloc(20);
      b.write(REQUEST_MAGIC, 0, 'latin1');
      b.writeUInt32BE(e % 3 === 0 ? e % 4096 : e, 8);
      b.writeUInt32BE(s % 3 === 0 ? s % 4096 : s, 12);
      b.writeUInt32BE(n % 4, 16);
      return b;
    }),
  );
  fc.assert(
    fc.property(header, (rec) => {
      c.tried++;
      try {
        const h = parseHeader(rec);
        assert.ok(h.envLen <= MAX_ENV_BYTES && h.stdinLen <= MAX_STDIN_BYTES && h.netns <= 2);
        c.accepted++;
      } catch (e) {
        assert.ok(e instanceof Error && !ONE_LINE_BREAKERS.test(e.message));
        c.errors++;
      }
    }),
    { numRuns: RUNS, seed: SEED },
  );

  // Bodies: a valid ADD environment with hostile entries spliced in, or raw hostile bytes.
  const goodEnv = Object.entries(cniEnv('ADD'))
    .map(([k, v]) => `${k}=${v}\0`)
    .join('');
  const body = fc.oneof(
    fc
      .tuple(
        fc.array(
          fc.tuple(
            fc.oneof(fc.constantFrom('CNI_ARGS', 'CNI_NETNS', 'CNI_COMMAND', 'CNI_IFNAME', 'CNI_CONTAINERID', '__proto__', 'constructor', ''), hostile),
            hostile,
          ),
          { maxLength: 3 },
        ),
        fc.oneof(hostile, fc.constant(netconf())),
      )
      .map(([extra, stdin]) => {
        const env = goodEnv + extra.map(([k, v]) => `${k}=${v.replace(/\0/g, '')}\0`).join('');
        return { buf: Buffer.concat([Buffer.from(env), Buffer.from(stdin)]), envLen: Buffer.byteLength(env) };
      }),
    fc.uint8Array({ maxLength: 200 }).chain((b) => fc.nat(b.length).map((n) => ({ buf: Buffer.from(b), envLen: n }))),
  );
  await fc.assert(
    fc.asyncProperty(body, async ({ buf, envLen }) => {
      c.tried++;
      const { env, stdin } = parseBody(buf, envLen);
      assert.equal(Object.getPrototypeOf(env), Object.prototype, 'a plain object: no prototype set from the wire');
      assert.equal(({} as Record<string, unknown>).polluted, undefined);
      for (const [k, v] of Object.entries(env))
        assert.ok(k !== '' && !k.includes('=') && !k.includes('\0') && !v.includes('\0'), `env entry ${JSON.stringify(k)}`);
      const f = fakes([sidecarPod()]);
      const out = await handleCni(env, stdin, f.deps);
      if (out.exitCode === 0) {
        if (f.rules.applied.length > 0) assert.equal(render(f.rules.applied[0].tx), await baselineRules, 'the wire never changes the rules');
        c.accepted++;
      } else {
        const doc = JSON.parse(out.stdout);
        assert.equal(typeof doc.code, 'number');
        assert.equal(f.rules.applied.length, 0, 'nothing applied on an error');
        c.errors++;
      }
    }),
    { numRuns: RUNS, seed: SEED },
  );
  report(t, 'cni-shim.sock records (headers + bodies)', c);
});
