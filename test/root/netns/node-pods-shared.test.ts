// One watch of the node's pods per agent: startAgent (in-process, as root) with the fast path's
// pod cache, the repair controller (label mode) and the real ambient agent (host rules in a
// throwaway node netns) all on, against the API stand-in. The stand-in's request log must show
// exactly one list and one watch of the node's pods (and ambient's own list+watch of
// namespaces, a different resource), and each consumer must see the pods it asked for.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { startAgent } from '../../../src/agent/agent';
import { createAmbientAgent } from '../../../src/agent/ambient';
import { parseAgentConfig } from '../../../src/agent/config';
import { ScopeLevels } from '../../../src/log/levels';
import { agentLogger } from '../../../src/log/winston-backend';
import { AMBIENT_NS_LABEL, AmbientEnv, KUBELET_UID, NODE, SELECTORS_YAML } from '../../support/ambient-env';
import { brokenWaiting, repairPod } from '../../support/kube-api';
import { requireRootAndTools } from '../../support/root';
import { tempDir } from '../../support/tmp';
import { until } from '../../support/until';

/** The node netns, run dir and API stand-in of the ambient tests, without their own agent. */
class Node extends AmbientEnv {
  async prepare(): Promise<this> {
    requireRootAndTools('ip', 'nft');
    await this.startNodeAndApi(path.join(os.tmpdir(), 'icts-shared-'));
    return this;
  }
}

test("fast path + repair + ambient share one list and one watch of the node's pods", async () => {
  const env = await new Node().prepare();
  const root = tempDir(path.join(os.tmpdir(), 'icts-shared-dirs-'));
  try {
    const d = Object.fromEntries(['net', 'bin', 'src', 'sa'].map((n) => [n, path.join(root, n)]));
    for (const dir of Object.values(d)) fs.mkdirSync(dir);
    fs.writeFileSync(path.join(d.src, 'istio-cni'), 'x', { mode: 0o755 });
    fs.writeFileSync(path.join(d.sa, 'token'), 'amb-token');
    fs.writeFileSync(path.join(d.sa, 'ca.crt'), env.pki.ca);
    fs.writeFileSync(path.join(d.net, '10-k8s.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'k8s', plugins: [{ type: 'ptp' }] }));
    // A broken sidecar pod (repair's business) and an ambient pod, both on this node; one pod elsewhere.
    env.api.upsert(repairPod({ name: 'broken', uid: 'u-broken', node: NODE, podIP: '10.250.0.5', initStatus: brokenWaiting }));
    env.api.upsert(repairPod({ name: 'amb', uid: 'u-amb', node: NODE, annotations: null }));
    env.api.upsert(repairPod({ name: 'elsewhere', uid: 'u-else', node: 'node-b' }));
    const cfg = parseAgentConfig(
      {
        'mounted-cni-net-dir': d.net,
        'cni-bin-dir': d.bin,
        'cni-bin-source-dir': d.src,
        'service-account-dir': d.sa,
        'cni-agent-run-dir': env.runDir,
        'listen-address': '127.0.0.1',
        'health-port': '0',
        'monitoring-port': '0',
      },
      {
        AMBIENT_ENABLED: 'true',
        AMBIENT_ENABLEMENT_SELECTOR: SELECTORS_YAML,
        ZTUNNEL_UDS_ADDRESS: path.join(env.runDir, 'ztunnel.sock'),
        POD_NAMESPACE: 'istio-system',
        NODE_NAME: NODE,
        REPAIR_ENABLED: 'true',
        REPAIR_LABEL_PODS: 'true',
        KUBERNETES_SERVICE_HOST: '127.0.0.1',
        KUBERNETES_SERVICE_PORT: String(env.api.port),
      },
    );
    const log = agentLogger({ levels: new ScopeLevels('error'), targets: [new Writable({ write: (_c, _e, cb) => cb() })] }).withScope('test');
    const agent = await startAgent(cfg, {
      log,
      kube: { get: async () => ({ status: 404, body: {} }) }, // the upgrade check at stop: not an upgrade
      ambient: (c, l, _m, pods) =>
        createAmbientAgent(c, l, {
          api: env.rest,
          pods,
          hostNetns: env.node.path,
          hostRoot: '',
          procRoot: '/proc',
          kubeletUid: KUBELET_UID,
          hostSetupRetry: { attempts: 1, intervalMs: 0 },
        }),
    });
    try {
      assert.ok(agent.nodePods && agent.podCache && agent.repair, 'the shared watch, the pod cache and repair are on');
      await agent.repair.synced;
      // Each consumer sees the node's pods through its own view.
      assert.ok(agent.podCache.lookup('shop', 'amb', 'u-amb'), 'the fast path answers from the shared watch');
      assert.equal(agent.podCache.lookup('shop', 'elsewhere', 'u-else'), undefined, "another node's pod is not watched");
      await until(
        'repair labelled the broken pod',
        () => env.api.requests.some((r) => r.method === 'PATCH' && r.path === '/api/v1/namespaces/shop/pods/broken/status'),
        10_000,
      );
      env.api.upsertNamespace('shop', AMBIENT_NS_LABEL);
      env.api.upsert(repairPod({ name: 'later', uid: 'u-later', node: NODE, annotations: null }));
      await until('a pod added later reaches the fast path', () => agent.podCache!.lookup('shop', 'later', 'u-later') !== undefined, 10_000);

      const podCalls = env.api.requests.filter((r) => r.method === 'GET' && r.path === '/api/v1/pods');
      const lists = podCalls.filter((r) => r.query.watch !== 'true');
      const watches = podCalls.filter((r) => r.query.watch === 'true');
      assert.equal(lists.length, 1, `pod lists: ${JSON.stringify(lists)}`);
      assert.equal(watches.length, 1, `pod watches: ${JSON.stringify(watches)}`);
      assert.equal(lists[0].query.fieldSelector, `spec.nodeName=${NODE}`);
      assert.equal(watches[0].query.allowWatchBookmarks, 'true');
      const nsLists = env.api.requests.filter((r) => r.method === 'GET' && r.path === '/api/v1/namespaces' && r.query.watch !== 'true');
      assert.equal(nsLists.length, 1, 'ambient lists namespaces once');
    } finally {
      await agent.stop();
    }
    assert.equal(agent.nodePods!.informer.isLive(), false, 'the shared watch stopped with the agent');
  } finally {
    await env.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
});
