// Go encoding/json behaviour the installer's output depends on (conformance README note 17/18).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { GoStruct, marshalIndent, parseGoJson, quote } from '../../src/installer/gojson';
import { insertCNIConfig } from '../../src/installer/cniconfig';

test('map keys are sorted bytewise at every level; struct fields keep their order', () => {
  const v = { b: 1, B: 2, a: { z: true, _: false }, é: null, A: [] };
  assert.equal(marshalIndent(v), '{\n  "A": [],\n  "B": 2,\n  "a": {\n    "_": false,\n    "z": true\n  },\n  "b": 1,\n  "\u00e9": null\n}');
  assert.equal(
    marshalIndent(
      new GoStruct([
        ['z', 1],
        ['a', new GoStruct([])],
        ['m', { y: 1, x: 2 }],
      ]),
    ),
    '{\n  "z": 1,\n  "a": {},\n  "m": {\n    "x": 2,\n    "y": 1\n  }\n}',
  );
});

test('strings: HTML characters, line separators and control characters are escaped as Go does', () => {
  assert.equal(quote('<a&b>'), '"\\u003ca\\u0026b\\u003e"');
  assert.equal(quote('x\u2028y\u2029'), '"x\\u2028y\\u2029"');
  assert.equal(quote('"\\\b\f\n\r\t\u0001\u001f\u007f'), '"\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f\u007f"');
  assert.equal(quote('snow \u2603 and \ud83d\ude00'), '"snow \u2603 and \ud83d\ude00"');
  assert.equal(quote('lone \ud800'), '"lone \ufffd"');
});

test('numbers come out as float64 does in Go', () => {
  const cases: [string, string][] = [
    ['100', '100'],
    ['1.50', '1.5'],
    ['1e3', '1000'],
    ['1e21', '1e+21'],
    ['123456789012345678901', '123456789012345680000'],
    ['0.000001', '0.000001'],
    ['0.0000001', '1e-7'],
    ['1.5e-10', '1.5e-10'],
    ['-0', '-0'],
    ['9007199254740993', '9007199254740992'],
  ];
  for (const [input, want] of cases) assert.equal(marshalIndent(parseGoJson(input)), want, input);
});

test('numbers outside float64 range are a parse error (Go refuses them, JSON.parse would give Infinity)', () => {
  assert.throws(() => parseGoJson('{"a": 1e400}'));
  assert.throws(() => parseGoJson('{"a": '));
});

test('null, empty containers and nesting are indented as MarshalIndent does', () => {
  assert.equal(
    marshalIndent({ a: null, b: [], c: {}, d: [1, [2]] }),
    '{\n  "a": null,\n  "b": [],\n  "c": {},\n  "d": [\n    1,\n    [\n      2\n    ]\n  ]\n}',
  );
});

test('insert keeps unknown keys and escapes HTML characters found in the existing config', () => {
  const existing = '{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"x","note":"a<b","n":1.0}],"zz":{"k":[]}}';
  const out = insertCNIConfig('{"cniVersion":"0.3.1","type":"istio-cni","name":"istio-cni"}', existing);
  assert.equal(
    out,
    '{\n  "cniVersion": "1.0.0",\n  "name": "n",\n  "plugins": [\n    {\n      "n": 1,\n      "note": "a\\u003cb",\n      "type": "x"\n    },\n' +
      '    {\n      "name": "istio-cni",\n      "type": "istio-cni"\n    }\n  ],\n  "zz": {\n    "k": []\n  }\n}\n',
  );
});

test('insert: "__proto__" in a config is an ordinary key', () => {
  const out = insertCNIConfig('{"type":"istio-cni"}', '{"name":"n","__proto__":{"polluted":1},"plugins":[{"type":"x"}]}');
  assert.match(out, /"__proto__": \{\n {4}"polluted": 1\n {2}\}/);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});

test('insert: errors for a list without plugins, a non-object plugin, and non-object inputs', () => {
  const istio = '{"type":"istio-cni"}';
  assert.throws(() => insertCNIConfig(istio, '{"name":"n"}'));
  assert.throws(() => insertCNIConfig(istio, '{"name":"n","plugins":{}}'));
  assert.throws(() => insertCNIConfig(istio, '{"name":"n","plugins":[1]}'));
  assert.throws(() => insertCNIConfig(istio, '"text"'));
  assert.throws(() => insertCNIConfig('[]', '{"type":"bridge"}'));
  // A non-object after our entry is never looked at (upstream stops at the first match).
  assert.doesNotThrow(() => insertCNIConfig(istio, '{"name":"n","plugins":[{"type":"istio-cni"},7]}'));
});

test('insert replaces only the first entry of our type and can use another type name', () => {
  const existing = JSON.stringify({ name: 'n', plugins: [{ type: 'my-cni', a: 1 }, { type: 'bridge' }, { type: 'my-cni', a: 2 }] });
  const out = JSON.parse(insertCNIConfig('{"type":"my-cni","a":3}', existing, 'my-cni'));
  assert.deepEqual(out.plugins, [{ type: 'bridge' }, { type: 'my-cni', a: 2 }, { type: 'my-cni', a: 3 }]);
});
