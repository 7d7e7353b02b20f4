// The agent's one work queue (src/agent/work-queue.ts) in its two uses: keyed (repair: a key
// waits once, re-runs when added during its work, dropped after maxAttempts) and unkeyed
// (ambient: every event worked in order, retried without limit, retries held to the bucket).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { WorkQueue } from '../../src/agent/work-queue';
import { MemoryLogger } from '../../src/log/logger';

test('keyed: a key waits once, runs again when added while in work, and is dropped after maxAttempts', async () => {
  const log = new MemoryLogger();
  const worked: string[] = [];
  let fail = 0;
  const q: WorkQueue<string> = new WorkQueue<string>(
    async (k) => {
      worked.push(k);
      if (k === 'a' && worked.filter((x) => x === 'a').length === 1) q.add('a'); // added during its own work
      if (k === 'bad') {
        fail++;
        throw new Error('boom');
      }
    },
    { key: (k) => k, maxAttempts: 3, baseDelayMs: 1, log, name: 'test' },
  );
  q.add('a');
  q.add('a');
  q.add('bad');
  const ac = new AbortController();
  const running = q.run(ac.signal);
  await new Promise((r) => setTimeout(r, 20));
  await q.idle();
  ac.abort();
  await running;
  assert.deepEqual(
    worked.filter((k) => k === 'a'),
    ['a', 'a'],
    'queued twice = once, plus the re-add during its work',
  );
  assert.equal(fail, 3, 'worked maxAttempts times');
  assert.ok(log.entries.some((e) => e.level === 'error' && /giving up on bad after 3 attempts/.test(e.msg)));
  assert.equal(q.failureCount('bad'), 0, 'forgotten once dropped');
});

test('unkeyed: every item in order, retried without limit, retries no faster than the bucket', async () => {
  const log = new MemoryLogger();
  const worked: string[] = [];
  let failures = 0;
  const q = new WorkQueue<{ id: string }>(
    async (it) => {
      worked.push(it.id);
      if (it.id === 'flaky' && failures < 6) {
        failures++;
        throw new Error('not yet');
      }
    },
    { baseDelayMs: 1, maxDelayMs: 2, rate: { qps: 100, burst: 2 }, describe: (it) => it.id, log, name: 'events' },
  );
  for (const id of ['x', 'x', 'flaky', 'y']) q.add({ id });
  const ac = new AbortController();
  const started = Date.now();
  const running = q.run(ac.signal);
  await new Promise((r) => setTimeout(r, 10));
  await q.idle();
  const took = Date.now() - started;
  ac.abort();
  await running;
  assert.deepEqual(worked.slice(0, 4), ['x', 'x', 'flaky', 'y'], 'no dedupe, in order');
  assert.equal(worked.filter((k) => k === 'flaky').length, 7, 'retried until it succeeded');
  // 6 retries, 2 from the burst, 4 at 100/s: at least ~40 ms (the back-off alone is 1-2 ms each).
  assert.ok(took >= 35, `retries held to the bucket: ${took} ms`);
  assert.ok(log.entries.some((e) => /events: flaky failed \(attempt 6\), retrying/.test(e.msg)));
});
