// Host-side work when the agent is not on the host network (Istio's chart default): with
// ALLOW_SWITCH_TO_HOST_NS=true the host rule and probe sets go to the node's netns (HOST_NETNS,
// here a netns this test made), never to the agent's own; without it, an agent whose netns is not
// the node's refuses and writes nothing; missing host mounts stop start-up before anything is
// written or listens.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { Writable } from 'node:stream';
import { startAgent } from '../../../src/agent/agent';
import { createAmbientAgent } from '../../../src/agent/ambient';
import { parseAgentConfig } from '../../../src/agent/config';
import { HostPathError, OWN_NETNS, planHostSide } from '../../../src/agent/host-side';
import { ScopeLevels } from '../../../src/log/levels';
import { MemoryLogger } from '../../../src/log/logger';
import { agentLogger } from '../../../src/log/winston-backend';
import { AmbientEnv, KUBELET_UID, rulesetText } from '../../support/ambient-env';
import { makeNetns, requireRootAndTools } from '../../support/root';
import { tempDir } from '../../support/tmp';
import { AgentDirPaths, agentFlags } from '../../support/agent-proc';
import { execFileSync } from 'node:child_process';

requireRootAndTools('ip', 'nft');

const ownRuleset = () => execFileSync('nft', ['list', 'ruleset'], { encoding: 'utf8' });

const env = new AmbientEnv({ hostSideFromEnv: true });
const spare = makeNetns('hs-spare');
after(async () => {
  await env.close();
  spare.remove();
});

test("ALLOW_SWITCH_TO_HOST_NS=true: the host rule and a pod's probe address land in the node netns named by HOST_NETNS, not in the agent's own", async () => {
  const ownBefore = ownRuleset().includes('istio-ambient-nat');
  await env.start();
  const starting = env.log.entries.find((e) => e.msg === 'ambient node agent starting');
  assert.equal(starting?.fields?.hostNetns, env.node.path);
  assert.equal(starting?.fields?.switchedToHostNetns, true, "the node netns is not the agent's");

  const pod = await env.addPod('web-1');
  const r = await env.cniAdd(pod);
  assert.equal(r.code, 0, `plugin ADD failed: ${r.stdout}\n${r.stderr}`);
  const host = rulesetText(env.node.name);
  assert.match(host, new RegExp(`skuid ${KUBELET_UID} ip daddr @istio-inpod-probes-v4 .*snat (ip )?to 169.254.7.127`));
  assert.match(host, new RegExp(`${pod.ip.replace(/\./g, '\\.')} comment "${pod.uid}"`));
  assert.equal(ownRuleset().includes('istio-ambient-nat'), ownBefore, "nothing added to the agent's own netns");
});

test('without ALLOW_SWITCH_TO_HOST_NS, an agent outside the node netns refuses host-side work and writes nothing', () => {
  const cfg = parseAgentConfig({}, { AMBIENT_ENABLED: 'true', HOST_NETNS: spare.path, ZTUNNEL_UDS_ADDRESS: path.join(os.tmpdir(), 'zt.sock') });
  assert.throws(
    () => createAmbientAgent(cfg, new MemoryLogger()),
    (e: Error) =>
      e instanceof HostPathError &&
      /host-side work refused: .*not the node's \(\/run\/netns\/icts-hs-spare.*ALLOW_SWITCH_TO_HOST_NS is not true; set ALLOW_SWITCH_TO_HOST_NS=true .* or run the pod with hostNetwork: true/.test(
        e.message,
      ),
  );
  assert.doesNotMatch(rulesetText(spare.name), /istio-ambient-nat/);
});

test('without the variable, an agent in the node netns (hostNetwork) works in its own; with it, too', () => {
  assert.deepEqual(planHostSide(false, OWN_NETNS), { netns: OWN_NETNS, switched: false });
  assert.deepEqual(planHostSide(true, OWN_NETNS), { netns: OWN_NETNS, switched: false });
  assert.deepEqual(planHostSide(true, spare.path), { netns: spare.path, switched: true });
});

test("a missing node /proc is a clear error naming the path and the chart's volume", () => {
  assert.throws(
    () => planHostSide(true, '/nonexistent/proc/1/ns/net'),
    /cannot read the node's network namespace \/nonexistent\/proc\/1\/ns\/net \(ENOENT\): mount the node's \/proc at \/host\/proc \(the chart's cni-host-procfs volume\)/,
  );
  assert.throws(() => planHostSide(false, '/nonexistent/proc/1/ns/net'), /cannot read the node's network namespace .*ENOENT/);
});

test('a missing CNI dir stops start-up before anything listens or is written', async () => {
  const root = tempDir(path.join(os.tmpdir(), 'icts-hostpaths-'));
  const d = Object.fromEntries(['net', 'bin', 'src', 'sa', 'run'].map((n) => [n, path.join(root, n)])) as AgentDirPaths;
  for (const n of ['net', 'src', 'sa'] as const) fs.mkdirSync(d[n]);
  fs.writeFileSync(path.join(d.src, 'istio-cni'), 'x', { mode: 0o755 });
  fs.writeFileSync(path.join(d.net, '10-k8s.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'k8s', plugins: [{ type: 'ptp' }] }));
  const port = await freePort();
  const flags = { ...agentFlags(d, { local: true }), 'health-port': String(port) };
  const log = agentLogger({ levels: new ScopeLevels('error'), targets: [new Writable({ write: (_c, _e, cb) => cb() })] }).withScope('cni-agent');
  await assert.rejects(
    startAgent(parseAgentConfig(flags, { REPAIR_ENABLED: 'false' }), { log }),
    /CNI_BIN_DIR .*\/bin is missing in this container \(ENOENT\): mount the node's directory there \(the chart's cni-bin-dir volume\)/,
  );
  fs.mkdirSync(d.bin);
  await assert.rejects(
    startAgent(
      parseAgentConfig(flags, {
        REPAIR_ENABLED: 'true',
        REPAIR_REPAIR_PODS: 'true',
        REPAIR_HOST_PROC_DIR: '/nonexistent/proc',
        KUBERNETES_SERVICE_HOST: '127.0.0.1',
        KUBERNETES_SERVICE_PORT: '1',
      }),
      { log },
    ),
    /REPAIR_HOST_PROC_DIR \/nonexistent\/proc is missing .*cni-host-procfs/,
  );
  assert.deepEqual(fs.readdirSync(d.bin), [], 'no plugin installed');
  assert.deepEqual(fs.readdirSync(d.net), ['10-k8s.conflist'], 'the primary config untouched');
  assert.equal(fs.readFileSync(path.join(d.net, '10-k8s.conflist'), 'utf8').includes('istio-cni'), false);
  assert.equal(fs.existsSync(d.run), false, 'no sockets created');
  assert.equal(await connects(port), false, 'nothing listens on the health port');
});

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

function connects(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1');
    c.once('connect', () => (c.destroy(), resolve(true)));
    c.once('error', () => resolve(false));
  });
}
