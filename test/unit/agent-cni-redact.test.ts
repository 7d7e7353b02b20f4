// The agent's fast path gives every CNI request a plugin logger of its own; each one must redact
// the service-account token, also when the API client (and so the token) comes from the cache.
// A guard: today's pod client keeps API bodies out of its errors, so no line should even come
// close; if one ever does (an API echoing the header), it must be redacted on every request.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { agentCniHandler } from '../../src/agent/cni-server';
import { ScopeLevels } from '../../src/log/levels';
import { agentLogger } from '../../src/log/winston-backend';
import { startApiStandIn } from '../support/kube-api';

test('every request through the agent redacts the token, the first one and those on the cached client', async () => {
  const token = `icts-secret-${process.pid}-5f2c9a71`;
  const api = await startApiStandIn(token);
  // An API that echoes the caller's Authorization header in its 403 body.
  api.failWith = { status: 403, body: (auth) => JSON.stringify({ kind: 'Status', message: `forbidden: you sent ${auth}` }) };
  const out = new PassThrough();
  const lines: string[] = [];
  out.on('data', (c) => lines.push(...String(c).split('\n').filter(Boolean)));
  const handler = agentCniHandler(agentLogger({ levels: new ScopeLevels('debug'), targets: [out] }).withScope('cni-plugin'), { runDir: api.runDir });
  try {
    const stdin = JSON.stringify({
      cniVersion: '1.0.0',
      name: 'k8s-pod-network',
      type: 'istio-cni',
      cni_agent_run_dir: api.runDir,
      plugin_log_level: 'debug',
      pod_lookup_attempts: 1,
      pod_lookup_interval_ms: 10,
    });
    for (const n of [1, 2, 3]) {
      const env = {
        CNI_COMMAND: 'ADD',
        CNI_CONTAINERID: `c${n}`,
        CNI_NETNS: '/run/netns/icts-redact-test-absent',
        CNI_IFNAME: 'eth0',
        CNI_PATH: '/opt/cni/bin',
        CNI_ARGS: `K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-${n};K8S_POD_INFRA_CONTAINER_ID=c${n}`,
      };
      const before = lines.length;
      const r = await handler(env, stdin);
      // The run's lines are written after the answer (the shim gets its reply first), on the next turn.
      assert.equal(lines.length, before, `request ${n}: nothing written before the answer is out`);
      await new Promise((resolve) => setImmediate(resolve));
      assert.ok(lines.length > before, `request ${n}: its lines are written once the answer is out`);
      assert.equal(r.exitCode, 1, `request ${n}: ${r.stdout}`);
      assert.ok(!r.stdout.includes(token), `request ${n}: the CNI error carries no token: ${r.stdout}`);
    }
    assert.equal(api.requestLines.length, 3, 'one GET per request');
    assert.ok(lines.filter((l) => l.includes('pod lookup failed')).length === 3, `each request logged its failure:\n${lines.join('\n')}`);
    assert.deepEqual(
      lines.filter((l) => l.includes(token)),
      [],
      'no log line holds the token',
    );
  } finally {
    handler.close();
    await api.close();
  }
});
