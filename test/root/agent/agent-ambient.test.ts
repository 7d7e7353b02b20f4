// startAgent in-process with ambient enabled: readiness waits for the ambient agent, and a stop
// during an upgrade (DaemonSet still there, per a local API stand-in) leaves the plugin in place.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { AmbientAgent, startAgent } from '../../../src/agent/agent';
import { parseAgentConfig } from '../../../src/agent/config';
import { ScopeLevels } from '../../../src/log/levels';
import { agentLogger } from '../../../src/log/winston-backend';
import { agentDirs, agentFlags } from '../../support/agent-proc';
import { until } from '../../support/until';

function setup(apiPort: number, extraEnv: Record<string, string> = {}) {
  const d = agentDirs({ api: { caPem: 'CA', token: 'tok' } });
  const cfg = parseAgentConfig(agentFlags(d, { local: true }), {
    AMBIENT_ENABLED: 'true',
    POD_NAMESPACE: 'istio-system',
    NODE_NAME: 'node-a',
    REPAIR_ENABLED: 'false',
    KUBERNETES_SERVICE_PROTOCOL: 'http',
    KUBERNETES_SERVICE_HOST: '127.0.0.1',
    KUBERNETES_SERVICE_PORT: String(apiPort),
    ...extraEnv,
  });
  const log = agentLogger({ levels: new ScopeLevels('error'), targets: [new Writable({ write: (_c, _e, cb) => cb() })] }).withScope('test');
  return { d, cfg, log };
}

/** A local API stand-in answering the two GETs of the upgrade check. */
async function apiStandIn(daemonSetExists: boolean): Promise<{ port: number; seen: string[]; close(): void }> {
  const seen: string[] = [];
  const server = http.createServer((req, res) => {
    seen.push(req.url ?? '');
    if (req.url === '/apis/apps/v1/namespaces/istio-system/daemonsets/istio-cni-node' && daemonSetExists) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'DaemonSet', metadata: { name: 'istio-cni-node' } }));
    } else if (req.url === '/api/v1/nodes/node-a') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'Node', metadata: { name: 'node-a', labels: {} } }));
    } else {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"kind":"Status","code":404}');
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { port: (server.address() as net.AddressInfo).port, seen, close: () => server.close() };
}

function fakeAmbient(): { factory: () => AmbientAgent; started: () => boolean; stoppedWith: () => boolean | undefined; release: () => void } {
  let started = false;
  let stopped: boolean | undefined;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  return {
    factory: () => ({
      start: async () => {
        await gate;
        started = true;
      },
      stop: async (skip) => {
        stopped = skip;
      },
    }),
    started: () => started,
    stoppedWith: () => stopped,
    release,
  };
}

test('ambient: ready only after the ambient agent started; an upgrade keeps the plugin installed', async () => {
  const api = await apiStandIn(true);
  const { d, cfg, log } = setup(api.port);
  const amb = fakeAmbient();
  const starting = startAgent(cfg, { log, ambient: amb.factory });
  await new Promise((r) => setTimeout(r, 100));
  amb.release();
  const agent = await starting;
  try {
    await until('ready', () => agent.ready(), 3000);
    assert.ok(amb.started());
  } finally {
    await agent.stop();
    api.close();
  }
  assert.equal(amb.stoppedWith(), true, 'ambient agent told to skip its cleanup');
  assert.ok(fs.readFileSync(path.join(d.net, '10-k8s.conflist'), 'utf8').includes('istio-cni'), 'plugin entry kept during upgrade');
  assert.ok(fs.existsSync(path.join(d.bin, 'istio-cni')));
  assert.ok(api.seen.includes('/apis/apps/v1/namespaces/istio-system/daemonsets/istio-cni-node'));
});

test('ambient: the DaemonSet is gone, so this is an uninstall and everything is removed', async () => {
  const api = await apiStandIn(false);
  const { d, cfg, log } = setup(api.port);
  const amb = fakeAmbient();
  amb.release();
  const agent = await startAgent(cfg, { log, ambient: amb.factory });
  try {
    await until('ready', () => agent.ready(), 3000);
  } finally {
    await agent.stop();
    api.close();
  }
  assert.equal(amb.stoppedWith(), false);
  assert.equal(fs.readFileSync(path.join(d.net, '10-k8s.conflist'), 'utf8').includes('istio-cni'), false);
  assert.equal(fs.existsSync(path.join(d.bin, 'istio-cni')), false);
});

test('ambient without an ambient agent in this build: installed but never ready', async () => {
  const api = await apiStandIn(false);
  const { cfg, log } = setup(api.port, { AMBIENT_DISABLE_SAFE_UPGRADE: 'true' });
  const agent = await startAgent(cfg, { log });
  try {
    await until('installed', () => agent.installer.ready, 3000);
    assert.equal(agent.ready(), false);
  } finally {
    await agent.stop();
    api.close();
  }
  // NODE_NAME is set, so the fast path's pod cache may have listed this node's pods; nothing else.
  assert.deepEqual(
    api.seen.filter((u) => !u.startsWith('/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a')),
    [],
    'safe upgrade disabled: no upgrade-check call',
  );
});
