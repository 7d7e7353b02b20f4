// The one Logger: level table and --log_output_level, Istio's text and JSON layouts (fixed clock),
// redaction, the formatter under hostile values, Istio's logging flags, and the relay's bounds.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { parseAgentConfig } from '../../src/agent/config';
import { parseLogOptions } from '../../src/agent/log-options';
import { parsePluginLogLine } from '../../src/agent/logserver';
import { LIMITS, encodeEntry, plainValue, renderJson, renderText } from '../../src/log/format';
import { LEVEL_RANK, ScopeLevels, applyOutputLevels, passes } from '../../src/log/levels';
import { Redactor } from '../../src/log/redact';
import { agentLogger } from '../../src/log/winston-backend';
import { InputError } from '../../src/values/errors';

const T = new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678));
const TS = '2024-01-02T03:04:05.678000Z';

function sink() {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _e, cb) {
      lines.push(
        ...String(chunk)
          .split('\n')
          .filter((l) => l !== ''),
      );
      cb();
    },
  });
  return { lines, stream };
}

/** A value nested `depth` levels deep, built without recursion. */
function deepArray(depth: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < depth; i++) v = [v];
  return v;
}

test('level table: ranks and passes', () => {
  assert.deepEqual(Object.keys(LEVEL_RANK), ['debug', 'info', 'warn', 'error', 'fatal', 'none']);
  assert.equal(passes('info', 'info'), true);
  assert.equal(passes('debug', 'info'), false);
  assert.equal(passes('error', 'fatal'), false);
  assert.equal(passes('error', 'none'), false);
});

test('--log_output_level: scoped, bare (default), all, in order; unnamed scopes follow default', () => {
  const l = new ScopeLevels('info');
  applyOutputLevels(l, '--log_output_level', 'default:info,cni-agent:debug');
  assert.equal(l.of('cni-agent'), 'debug');
  assert.equal(l.of('repair'), 'info');
  assert.equal(l.enabled('cni-agent', 'debug'), true);
  assert.equal(l.enabled('cni-plugin', 'debug'), false);

  const bare = new ScopeLevels('info');
  applyOutputLevels(bare, '--log_output_level', 'debug');
  assert.equal(bare.of('default'), 'debug');
  assert.equal(bare.of('cni-agent'), 'debug');

  const all = new ScopeLevels('info');
  applyOutputLevels(all, '--log_output_level', 'cni-agent:debug,all:warn,cni-plugin:error');
  assert.equal(all.of('cni-agent'), 'warn', 'all: replaces what came before');
  assert.equal(all.of('cni-plugin'), 'error', 'later entries win');
  assert.equal(all.describe(), 'default:warn,cni-plugin:error');
});

test('--log_output_level: malformed values are InputErrors naming the flag and the value', () => {
  for (const [text, why] of [
    ['cni-agent:verbose', /invalid output level "verbose"/],
    ['a:b:c', /invalid output level format "a:b:c"/],
    ['info,', /invalid output level ""/],
    [':debug', /invalid scope ""/],
    ['', /invalid output level ""/],
  ] as const) {
    assert.throws(
      () => applyOutputLevels(new ScopeLevels(), '--log_output_level', text),
      (e: unknown) => e instanceof InputError && e.message.startsWith(`invalid --log_output_level ${JSON.stringify(text)}: `) && why.test(e.message),
      text,
    );
  }
});

test("Istio's logging flags: parsed, defaults, bad values name the flag", () => {
  const d = parseLogOptions({});
  assert.equal(d.json, false);
  assert.deepEqual(d.targets, ['stdout']);
  assert.equal(d.levels.describe(), 'default:info');
  assert.equal(d.stackLevels.of('cni-agent'), 'none');
  assert.deepEqual(d.ctrlz, { port: 9876, address: 'localhost' });

  const o = parseLogOptions({
    log_output_level: 'default:warn,cni-agent:debug',
    log_as_json: '',
    log_caller: 'cni-agent,repair',
    log_stacktrace_level: 'cni-agent:error',
    log_target: ['stderr', '/tmp/agent.log'],
    ctrlz_port: '9000',
    ctrlz_address: '*',
  });
  assert.equal(o.json, true, 'a bare --log_as_json is true');
  assert.equal(o.levels.of('cni-agent'), 'debug');
  assert.equal(o.levels.of('repair'), 'warn');
  assert.deepEqual([...o.callers], ['cni-agent', 'repair']);
  assert.equal(o.stackLevels.of('cni-agent'), 'error');
  assert.deepEqual(o.targets, ['stderr', '/tmp/agent.log']);
  assert.deepEqual(o.ctrlz, { port: 9000, address: '*' });
  assert.equal(parseLogOptions({ log_as_json: 'false' }).json, false);

  for (const [argv, re] of [
    [{ log_as_json: 'maybe' }, /^invalid --log_as_json "maybe"/],
    [{ ctrlz_port: '70000' }, /^invalid --ctrlz_port "70000"/],
    [{ log_target: ['relative.log'] }, /^invalid --log_target "relative.log"/],
    [{ log_stacktrace_level: 'x:y' }, /^invalid --log_stacktrace_level "x:y"/],
    [{ log_caller: 'a:b' }, /^invalid --log_caller "a:b"/],
  ] as const) {
    assert.throws(
      () => parseLogOptions(argv as Record<string, unknown>),
      (e: unknown) => e instanceof InputError && re.test(e.message),
    );
  }
});

test('plugin_log_level follows the cni-plugin scope, as Istio passes it down; PLUGIN_LOG_LEVEL overrides', () => {
  assert.equal(parseAgentConfig({}, {}).install.pluginLogLevel, 'info');
  assert.equal(parseAgentConfig({ log_output_level: 'cni-plugin:debug' }, {}).install.pluginLogLevel, 'debug');
  assert.equal(parseAgentConfig({ log_output_level: 'warn' }, {}).install.pluginLogLevel, 'warn');
  assert.equal(parseAgentConfig({ log_output_level: 'cni-plugin:debug' }, { PLUGIN_LOG_LEVEL: 'error' }).install.pluginLogLevel, 'error');
  assert.equal(parseAgentConfig({}, { AGENT_LOG_LEVEL: 'debug' }).logging.levels.of('cni-agent'), 'debug');
  assert.throws(() => parseAgentConfig({ log_output_level: 'loud' }, {}), /^InputError: invalid --log_output_level "loud"|invalid --log_output_level "loud"/);
});

test("text layout: Istio's console columns, fields as fmt.Sprint prints them", () => {
  const line = renderText({
    level: 'info',
    time: T,
    scope: 'cni-agent',
    msg: 'pod redirected',
    fields: {
      pod: 'shop/web-1',
      port: 15001,
      ok: true,
      none: null,
      skip: undefined,
      list: ['a', 1],
      obj: { k: 'v' },
      err: new Error('boom'),
      text: 'two words',
      nl: 'a\nb',
    },
  });
  assert.equal(
    line,
    `${TS}\tinfo\tcni-agent\tpod redirected\tpod=shop/web-1 port=15001 ok=true none=<nil> list=["a",1] obj={"k":"v"} err=boom text=two words nl="a\\nb"`,
  );
  assert.equal(renderText({ level: 'warn', time: T, scope: 'default', msg: 'no scope column' }), `${TS}\twarn\tno scope column`);
  assert.equal(renderText({ level: 'error', time: T, scope: 'x', msg: 'line1\nline2' }), `${TS}\terror\tx\tline1\n\tline2`);
  assert.equal(renderText({ level: 'info', time: T, scope: 'x', caller: 'agent/agent.js:12', msg: 'm' }), `${TS}\tinfo\tx\tagent/agent.js:12\tm`);
});

test("JSON layout: Istio's keys in zap's order (level, time, scope, msg, fields); reserved field names kept apart", () => {
  assert.equal(
    renderJson({ level: 'debug', time: T, scope: 'cni-plugin', msg: 'm', fields: { pod: 'p', n: 2, msg: 'shadow', big: 10n } }),
    `{"level":"debug","time":"${TS}","scope":"cni-plugin","msg":"m","pod":"p","n":2,"field.msg":"shadow","big":"10"}`,
  );
  // The CNI plugin's line: the default scope, no scope key.
  assert.equal(encodeEntry('info', T, 'hi', { a: 1 }), `{"level":"info","time":"${TS}","msg":"hi","a":1}`);
  // A relayed entry keeps its own time.
  assert.equal(
    renderJson({ level: 'info', time: '2020-01-01T00:00:00.000001Z', scope: 's', msg: 'm' }),
    '{"level":"info","time":"2020-01-01T00:00:00.000001Z","scope":"s","msg":"m"}',
  );
});

test('the agent logger (winston): per-scope levels, text and JSON, caller and stack, fixed clock', () => {
  const levels = new ScopeLevels('info');
  applyOutputLevels(levels, '--log_output_level', 'cni-agent:debug,repair:warn');
  const text = sink();
  const root = agentLogger({ levels, targets: [text.stream], now: () => T });
  root.withScope('cni-agent').debug('shown', { a: 'b' });
  root.withScope('repair').info('hidden');
  root.withScope('repair').warn('shown too');
  assert.deepEqual(text.lines, [`${TS}\tdebug\tcni-agent\tshown\ta=b`, `${TS}\twarn\trepair\tshown too`]);

  const json = sink();
  const j = agentLogger({
    json: true,
    targets: [json.stream],
    now: () => T,
    callers: new Set(['cni-agent']),
    stackLevels: (() => {
      const s = new ScopeLevels('none');
      applyOutputLevels(s, '--log_stacktrace_level', 'cni-agent:error');
      return s;
    })(),
  });
  j.withScope('cni-agent').info('with caller');
  j.withScope('cni-agent').error('with stack');
  const [a, b] = json.lines.map((l) => JSON.parse(l) as Record<string, string>);
  assert.deepEqual(Object.keys(a), ['level', 'time', 'scope', 'caller', 'msg']);
  assert.match(a.caller, /^unit\/agent-logging\.test\.js:\d+$/);
  assert.equal(a.time, TS);
  assert.deepEqual(Object.keys(b), ['level', 'time', 'scope', 'caller', 'msg', 'stack']);
  assert.match(b.stack, /agent-logging\.test\.js/);
  assert.doesNotMatch(b.stack, /log\/scoped\./, 'no frames of the logger itself');
});

test('a held plugin run writes nothing until flush(), then its lines in order, with the time and caller of each call', async () => {
  const out = sink();
  let now = T;
  const root = agentLogger({ json: true, targets: [out.stream], now: () => now, callers: new Set(['cni-plugin']) });
  const run = root.withScope('cni-plugin').pluginRun({ held: true });
  run.configure?.({ level: 'info', agentRunDir: '/nonexistent' });
  run.info('first', { n: 1 });
  run.debug('below the run level');
  now = new Date(T.getTime() + 1000);
  run.warn('second');
  assert.deepEqual(out.lines, [], 'held lines are not written before flush');
  await run.flush?.();
  const got = out.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.deepEqual(
    got.map((r) => [r.level, r.msg, r.time]),
    [
      ['info', 'first', TS],
      ['warn', 'second', '2024-01-02T03:04:06.678000Z'],
    ],
  );
  assert.match(String(got[0].caller), /^unit\/agent-logging\.test\.js:\d+$/, 'the caller is the call site, not flush()');
  await run.flush?.();
  assert.equal(out.lines.length, 2, 'a second flush writes nothing again');
});

test('redaction: the token and its JSON-escaped form never reach a line, in either layout, in any scope', () => {
  const token = 'eyJhbGciOi"quoted\\token-0123456789';
  for (const json of [false, true]) {
    const out = sink();
    const root = agentLogger({ json, targets: [out.stream], now: () => T });
    root.withScope('cni-plugin').redact(token);
    root.withScope('cni-agent').info(`header Bearer ${token}`, { auth: token, nested: { t: token } });
    const run = root.withScope('cni-plugin').pluginRun();
    run.redact?.('another-secret-value');
    run.info('x', { v: 'another-secret-value' });
    const all = out.lines.join('\n');
    assert.ok(!all.includes(token) && !all.includes(JSON.stringify(token).slice(1, -1)), all);
    assert.ok(!all.includes('another-secret-value'), all);
    assert.equal(all.split('[redacted]').length - 1, 4, all);
  }
  // Short strings are never secrets; the newest 16 are kept.
  const r = new Redactor();
  r.add('abc');
  assert.equal(r.scrub('abc'), 'abc');
  for (let i = 0; i < 20; i++) r.add(`secret-number-${String(i).padStart(2, '0')}`);
  assert.equal(r.scrub('secret-number-03 secret-number-19'), 'secret-number-03 [redacted]');
});

test('the formatter never throws and stays bounded: deep, cyclic, BigInt, huge, throwing getters, revoked proxies', () => {
  const cyclic: Record<string, unknown> = { name: 'c' };
  cyclic.self = cyclic;
  const throwingGetter = Object.defineProperty({ ok: 1 }, 'bad', {
    enumerable: true,
    get() {
      throw new Error('getter');
    },
  });
  const { proxy: revoked, revoke } = Proxy.revocable({}, {});
  revoke();
  const trapping = new Proxy(
    {},
    {
      ownKeys() {
        throw new Error('ownKeys');
      },
    },
  );
  const hostileError = Object.defineProperty(new Error('x'), 'message', {
    get() {
      throw new Error('message getter');
    },
  });
  const deepObject = (() => {
    let v: unknown = 'bottom';
    for (let i = 0; i < 100_000; i++) v = { v };
    return v;
  })();
  const values: Record<string, unknown> = {
    deepArray: deepArray(200_000),
    deepObject,
    cyclic,
    big: 12345678901234567890n,
    huge: 'x'.repeat(10_000_000),
    manyKeys: Object.fromEntries(Array.from({ length: 100_000 }, (_, i) => [`k${i}`, i])),
    sparse: new Array(1e9),
    throwingGetter,
    revoked,
    trapping,
    hostileError,
    symbol: Symbol('s'),
    fn: function named() {},
    nan: NaN,
    buf: Buffer.alloc(64),
  };
  for (const [name, v] of Object.entries(values)) {
    for (const render of [renderText, renderJson]) {
      let line = '';
      assert.doesNotThrow(() => {
        line = render({ level: 'info', time: T, scope: 's', msg: name, fields: { v } });
      }, name);
      assert.ok(line.length <= LIMITS.lineBytes + 256, `${name}: ${line.length}`);
    }
    assert.doesNotThrow(() => encodeEntry('info', T, name, { v }), name);
  }
  assert.equal(plainValue(values.deepArray).clip, 'too_deep');
  assert.equal(plainValue(values.huge).clip, 'too_large');
  assert.equal(plainValue(values.revoked).clip, 'unreadable');
  assert.deepEqual(plainValue(cyclic).value, { name: 'c', self: '[circular]' });
  assert.deepEqual(plainValue(throwingGetter).value, { ok: 1, bad: '[unreadable]' });
  // A fields object that itself throws.
  assert.doesNotThrow(() => renderJson({ level: 'info', time: T, msg: 'm', fields: trapping as Record<string, unknown> }));
  // Too many fields: the line keeps what fits and says how many it left out.
  const many = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`f${i}`, 'y'.repeat(3000)]));
  const line = renderJson({ level: 'info', time: T, msg: 'm', fields: many });
  assert.ok(line.length <= LIMITS.lineBytes);
  assert.match(line, /"fieldsDropped":1[0-9]/);
  JSON.parse(line);
});

test('relay bounds: a line over 16 KiB, a field nested deeper than 16 or longer than 4 KiB is dropped with its reason', () => {
  const line = (fields: Record<string, unknown>) => JSON.stringify({ level: 'info', time: '2024-05-01T10:00:00Z', msg: 'm', ...fields });
  // The reproduction: a 200,000-level array (400 KB) in one field.
  const deep = `{"level":"info","time":"2024-05-01T10:00:00Z","msg":"m","f":${'['.repeat(200_000)}1${']'.repeat(200_000)}}`;
  assert.deepEqual(parsePluginLogLine(deep), { dropped: 'too_large' });
  assert.deepEqual(parsePluginLogLine(line({ f: deepArray(LIMITS.depth + 1) })), { dropped: 'too_deep' });
  assert.ok(!('dropped' in parsePluginLogLine(line({ f: deepArray(LIMITS.depth - 1) }))));
  assert.deepEqual(parsePluginLogLine(line({ f: 'z'.repeat(LIMITS.fieldBytes + 1) })), { dropped: 'too_large' });
  assert.ok(!('dropped' in parsePluginLogLine(line({ f: 'z'.repeat(LIMITS.fieldBytes - 10) }))));
  assert.deepEqual(parsePluginLogLine(line({ a: 'z'.repeat(4000), b: 'z'.repeat(4000), c: 'z'.repeat(4000), d: 'z'.repeat(4000), e: 'z'.repeat(1000) })), {
    dropped: 'too_large',
  });
});
