// A node for ambient tests, all in network namespaces this test creates: a "node" netns playing
// the host (the host rule and probe sets go there, never into the real host's nftables), pod
// netns wired to it by veth pairs (pod eth0 10.251.<i>.2/24, node side 10.251.<i>.1, default
// route through it; with dualStack also fd00:251:<i>::2/64), the local HTTPS API stand-in with
// namespaces and pods, the agent's ambient half (in this process), and the ztunnel stand-in.
// Pods are added to the API and then handed to the agent by the real plugin binary (CNI ADD),
// or given a process in a kubelet-style cgroup so the agent can find them through /proc.
import { ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseAgentConfig } from '../../src/agent/config';
import { RunningAmbient, createAmbientAgent } from '../../src/agent/ambient';
import { MemoryLogger } from '../../src/log/logger';
import { RestClient } from '../../src/kube/rest';
import { KubeApiStandIn, Obj } from './kube-api';
import { makeNetns, requireRootAndTools } from './root';
import { CLIENT, SERVER } from './topology';
import { istioKubeconfig, makePki, TestPki } from './tls';
import { runPlugin } from './cni-run';
import { ZtunnelStandIn, StandInOptions } from './ztunnel-standin';
import { tempDir } from './tmp';
import { SELECTORS_YAML } from './selectors';

export const NODE = 'node-amb';
export const KUBELET_UID = 4242;
export const AMBIENT_NS_LABEL = { 'istio.io/dataplane-mode': 'ambient' };
export { SELECTORS_YAML };

export const SELECTORS_JSON = [
  { podSelector: { matchLabels: { 'istio.io/dataplane-mode': 'ambient' } } },
  {
    podSelector: { matchExpressions: [{ key: 'istio.io/dataplane-mode', operator: 'NotIn', values: ['none'] }] },
    namespaceSelector: { matchLabels: { 'istio.io/dataplane-mode': 'ambient' } },
  },
];

export interface TestPod {
  name: string;
  namespace: string;
  uid: string;
  index: number;
  netns: ReturnType<typeof makeNetns>;
  ip: string;
  ip6?: string;
  nodeIp: string;
  nodeIp6?: string;
  /** A process inside the pod netns in a kubelet-style cgroup (see withProcess). */
  proc?: ChildProcess;
  cgroupDir?: string;
}

export interface EnvOptions {
  ipv6?: boolean;
  dualStack?: boolean;
  reconcile?: boolean;
  standIn?: StandInOptions;
  /** Connect the ztunnel stand-in at start (default true). */
  connect?: boolean;
  zdsTimeouts?: { helloMs?: number; writeMs?: number; ackMs?: number };
  /**
   * The agent finds the node's netns as the DaemonSet's does (ALLOW_SWITCH_TO_HOST_NS=true,
   * HOST_NETNS = the node netns) instead of being handed it.
   */
  hostSideFromEnv?: boolean;
}

let seq = 0;
const CGROUP_ROOT = '/sys/fs/cgroup/systemd';

/** `ip` without blocking the event loop: the agent and the ztunnel stand-in run in this process, and their 5 s deadlines keep ticking. */
function ip(...args: string[]): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile('ip', args, (err, _out, stderr) => (err ? reject(new Error(`ip ${args.join(' ')}: ${stderr || err.message}`)) : resolve())),
  );
}

export class AmbientEnv {
  readonly log = new MemoryLogger();
  readonly tag = `a${process.pid % 10000}${seq++}`;
  node!: ReturnType<typeof makeNetns>;
  runDir!: string;
  pki!: TestPki;
  api!: KubeApiStandIn;
  rest!: RestClient;
  agent?: RunningAmbient;
  standIn!: ZtunnelStandIn;
  readonly pods: TestPod[] = [];
  private readonly children: ChildProcess[] = [];
  private cgroupBase?: string;
  private podCount = 0;

  constructor(readonly opts: EnvOptions = {}) {}

  get zdsPath(): string {
    return path.join(this.runDir, 'ztunnel.sock');
  }

  async start(): Promise<this> {
    requireRootAndTools('ip', 'nft', 'setpriv');
    await this.startNodeAndApi(path.join(os.tmpdir(), 'icts-amb-'));
    this.api.upsertNamespace('plain');
    this.standIn = new ZtunnelStandIn(this.zdsPath, { inPod: true, ...this.opts.standIn });
    await this.startAgent();
    if (this.opts.connect !== false) await this.connectZtunnel();
    return this;
  }

  /**
   * The node netns, the run dir (under `runDirPrefix`) with the plugin's kubeconfig, and the API
   * stand-in with istio-system and the ambient namespace shop: what every ambient agent needs,
   * in-process or not (test/root/netns/ambient-sigkill.test.ts runs it as a child).
   */
  protected async startNodeAndApi(runDirPrefix: string): Promise<void> {
    this.node = makeNetns(`${this.tag}-node`);
    this.runDir = tempDir(runDirPrefix);
    this.pki = makePki();
    this.api = await new KubeApiStandIn(this.pki).start();
    this.api.token = 'amb-token';
    fs.writeFileSync(path.join(this.runDir, 'istio-cni-kubeconfig'), istioKubeconfig(this.api.url, { caPem: this.pki.ca, token: 'amb-token' }), {
      mode: 0o600,
    });
    this.rest = new RestClient({ server: this.api.url, ca: () => this.pki.ca, token: () => 'amb-token' });
    this.api.upsertNamespace('istio-system');
    this.api.upsertNamespace('shop', AMBIENT_NS_LABEL);
  }

  config() {
    return parseAgentConfig(
      {},
      {
        AMBIENT_ENABLED: 'true',
        AMBIENT_ENABLEMENT_SELECTOR: SELECTORS_YAML,
        AMBIENT_IPV6: this.opts.ipv6 ? 'true' : 'false',
        AMBIENT_RECONCILE_POD_RULES_ON_STARTUP: this.opts.reconcile ? 'true' : 'false',
        CNI_AGENT_RUN_DIR: this.runDir,
        ZTUNNEL_UDS_ADDRESS: this.zdsPath,
        NODE_NAME: NODE,
        EXCLUDE_NAMESPACES: 'kube-system',
        POD_NAMESPACE: 'istio-system',
        ...(this.opts.hostSideFromEnv ? { ALLOW_SWITCH_TO_HOST_NS: 'true', HOST_NETNS: this.node.path } : {}),
      },
    );
  }

  async startAgent(): Promise<RunningAmbient> {
    const agent = createAmbientAgent(this.config(), this.log, {
      api: this.rest,
      hostNetns: this.opts.hostSideFromEnv ? undefined : this.node.path,
      hostRoot: '',
      procRoot: '/proc',
      kubeletUid: KUBELET_UID,
      zdsTimeouts: { acceptIntervalMs: 50, ...this.opts.zdsTimeouts },
      informer: { backoffMinMs: 50, backoffMaxMs: 500 },
      retry: { baseMs: 20, maxMs: 300 },
      hostSetupRetry: { attempts: 1, intervalMs: 0 },
    });
    await agent.start();
    this.agent = agent;
    return agent;
  }

  async stopAgent(skipCleanup: boolean): Promise<void> {
    const a = this.agent;
    this.agent = undefined;
    await a?.stop(skipCleanup);
  }

  /** Connects the stand-in and waits until the agent has the ack of SnapshotSent. */
  async connectZtunnel(): Promise<void> {
    const zds = this.agent?.parts().zds;
    const acked = zds?.stats.snapshots ?? 0;
    const before = this.standIn.snapshots.length;
    await this.standIn.connect();
    await this.standIn.waitFor(() => this.standIn.snapshots.length > before && (!zds || zds.stats.snapshots > acked), 10_000, 'the snapshot');
  }

  /** A pod netns wired to the node, and the Pod object in the API (Running, with its IPs). */
  async addPod(name: string, labels: Record<string, string> = {}, namespace = 'shop', annotations: Record<string, string> = {}): Promise<TestPod> {
    const index = ++this.podCount;
    const netns = makeNetns(`${this.tag}-p${index}`);
    const hostIf = `av${index}`;
    await ip('-n', netns.name, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', hostIf, 'netns', this.node.name);
    const podIp = `10.251.${index}.2`;
    const nodeIp = `10.251.${index}.1`;
    await ip('-n', netns.name, 'addr', 'add', `${podIp}/24`, 'dev', 'eth0');
    await ip('-n', this.node.name, 'addr', 'add', `${nodeIp}/24`, 'dev', hostIf);
    let ip6: string | undefined;
    let nodeIp6: string | undefined;
    if (this.opts.dualStack) {
      ip6 = `fd00:251:${index.toString(16)}::2`;
      nodeIp6 = `fd00:251:${index.toString(16)}::1`;
      await ip('-n', netns.name, 'addr', 'add', `${ip6}/64`, 'dev', 'eth0', 'nodad');
      await ip('-n', this.node.name, 'addr', 'add', `${nodeIp6}/64`, 'dev', hostIf, 'nodad');
    }
    await ip('-n', netns.name, 'link', 'set', 'eth0', 'up');
    await ip('-n', this.node.name, 'link', 'set', hostIf, 'up');
    await ip('-n', netns.name, 'route', 'add', 'default', 'via', nodeIp);
    if (nodeIp6) await ip('-n', netns.name, '-6', 'route', 'add', 'default', 'via', nodeIp6);
    const uid = `0000${this.tag.padStart(4, '0').slice(-4)}-0000-4000-8000-${String(index).padStart(12, '0')}`;
    const pod: TestPod = { name, namespace, uid, index, netns, ip: podIp, ip6, nodeIp, nodeIp6 };
    this.pods.push(pod);
    this.api.upsert(this.podObject(pod, labels, annotations));
    return pod;
  }

  podObject(p: TestPod, labels: Record<string, string>, annotations: Record<string, string> = {}): Obj {
    return {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: p.name, namespace: p.namespace, uid: p.uid, labels, annotations },
      spec: { nodeName: NODE, serviceAccountName: `sa-${p.name}`, containers: [{ name: 'app' }] },
      status: { phase: 'Running', podIP: p.ip, podIPs: [{ ip: p.ip }, ...(p.ip6 ? [{ ip: p.ip6 }] : [])] },
    };
  }

  /** The pod's annotation ambient.istio.io/redirection in the API. */
  redirection(p: TestPod): string | undefined {
    return this.api.pod(p.namespace, p.name)?.metadata.annotations?.['ambient.istio.io/redirection'];
  }

  /** Runs the real plugin binary's ADD for the pod (kubeconfig in the run dir, prevResult with its IPs). */
  cniAdd(p: TestPod) {
    const conf = {
      cniVersion: '1.0.0',
      name: 'k8s-pod-network',
      type: 'istio-cni',
      cni_agent_run_dir: this.runDir,
      ambient_enabled: true,
      enablement_selectors: SELECTORS_JSON,
      exclude_namespaces: ['kube-system'],
      pod_namespace: 'istio-system',
      plugin_log_level: 'debug',
      prevResult: {
        cniVersion: '1.0.0',
        interfaces: [{ name: 'eth0', sandbox: p.netns.path }],
        ips: [{ interface: 0, address: `${p.ip}/24`, gateway: p.nodeIp }, ...(p.ip6 ? [{ interface: 0, address: `${p.ip6}/64`, gateway: p.nodeIp6 }] : [])],
      },
    };
    return runPlugin(
      {
        CNI_COMMAND: 'ADD',
        CNI_CONTAINERID: `c${p.index}`,
        CNI_NETNS: p.netns.path,
        CNI_IFNAME: 'eth0',
        CNI_PATH: '/opt/cni/bin',
        CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${p.namespace};K8S_POD_NAME=${p.name};K8S_POD_INFRA_CONTAINER_ID=c${p.index};K8S_POD_UID=${p.uid}`,
      },
      JSON.stringify(conf),
    );
  }

  /**
   * Starts a process inside the pod netns, in a cgroup named as kubelet's cgroupfs driver names
   * them (<base>/kubepods/besteffort/pod<uid>/<container id>), so the agent can find the netns
   * through /proc as it finds running pods after a restart.
   */
  withProcess(p: TestPod): void {
    this.cgroupBase ??= path.join(CGROUP_ROOT, `icts-${this.tag}`);
    const dir = path.join(this.cgroupBase, 'kubepods', 'besteffort', `pod${p.uid}`, `${'c'.repeat(8)}${String(p.index).padStart(56, '0')}`);
    fs.mkdirSync(dir, { recursive: true });
    const child = spawn('ip', ['netns', 'exec', p.netns.name, 'sleep', '100000'], { stdio: 'ignore' });
    this.children.push(child);
    // The sleep replaces ip's process image (exec), so its PID is the child's.
    fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(child.pid));
    p.proc = child;
    p.cgroupDir = dir;
  }

  /** Starts the pod's "app": a probe server inside the pod netns on `port`. */
  startApp(p: TestPod, port = 8080, host = '0.0.0.0'): Promise<void> {
    return this.startServer(p.netns.name, host, port, `app-${p.name}`);
  }

  /** A server in the node netns (what the pod reaches when it is not redirected). */
  startNodeServer(host: string, port: number, label: string): Promise<void> {
    return this.startServer(this.node.name, host, port, label);
  }

  private startServer(ns: string, host: string, port: number, label: string): Promise<void> {
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, SERVER, host, String(port), 'tcp', label], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.children.push(child);
    return new Promise((resolve, reject) => {
      let err = '';
      child.stderr!.on('data', (d) => (err += d));
      child.stdout!.on('data', (d) => String(d).includes('ready') && resolve());
      child.on('exit', (code) => reject(new Error(`server ${label} exited ${code}: ${err}`)));
    });
  }

  /** Cleans up everything this env made; with ICTS_DEBUG set, prints the agent's log first. */
  async close(): Promise<void> {
    if (process.env.ICTS_DEBUG) {
      for (const e of this.log.entries)
        console.log(
          e.level,
          e.msg,
          JSON.stringify(e.fields ?? {}, (_k, v) => (typeof v === 'bigint' ? String(v) : v)),
        );
    }
    await this.stopAgent(false).catch(() => undefined);
    this.standIn?.close();
    for (const c of this.children) c.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 50));
    for (const p of this.pods) p.netns.remove();
    this.node?.remove();
    await this.api?.close();
    this.rest?.close();
    if (this.runDir) fs.rmSync(this.runDir, { recursive: true, force: true });
    if (this.cgroupBase) removeCgroupTree(this.cgroupBase);
  }
}

function removeCgroupTree(dir: string): void {
  if (!fs.existsSync(dir)) return;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeCgroupTree(path.join(dir, e.name));
  for (let i = 0; i < 20; i++) {
    try {
      fs.rmdirSync(dir);
      return;
    } catch {
      execFileSync('sleep', ['0.05']);
    }
  }
}

export interface Reply {
  label: string;
  uid?: string;
  local: { address: string; port: number };
  remote: { address: string; port: number };
  origDst: { address: string; port: number; family: string } | null;
  error?: string;
}

/** Connects from netns `ns` (as `uid` when given) without blocking this process's event loop. */
export function probeAsync(ns: string, host: string, port: number, opts: { uid?: number; timeoutMs?: number } = {}): Promise<Reply> {
  const asUid = opts.uid === undefined ? [] : ['setpriv', `--reuid=${opts.uid}`, `--regid=${opts.uid}`, '--clear-groups'];
  return new Promise((resolve) => {
    execFile(
      'ip',
      ['netns', 'exec', ns, ...asUid, process.execPath, CLIENT, host, String(port), 'tcp', String(opts.timeoutMs ?? 3000)],
      { encoding: 'utf8' },
      (err, stdout, stderr) => {
        const out = stdout.trim();
        if (err || !out.startsWith('{')) return resolve({ error: out || stderr || String(err) } as Reply);
        resolve(JSON.parse(out) as Reply);
      },
    );
  });
}

/** nft ruleset of a netns as text (for "no IPv6 rule" checks and handle comparisons). */
export function rulesetText(nsName: string, handles = false): string {
  return execFileSync('ip', ['netns', 'exec', nsName, 'nft', ...(handles ? ['-a'] : []), 'list', 'ruleset'], { encoding: 'utf8' });
}

export function ipRules(nsName: string, family: 4 | 6): string {
  return execFileSync('ip', ['-n', nsName, `-${family}`, 'rule', 'show'], { encoding: 'utf8' });
}
