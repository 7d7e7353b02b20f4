// The plugin's ambient branch (Istio: plugin.go isAmbientPod + cnieventclient.go). On ADD, with
// ambient_enabled: GET the pod and its namespace (2 attempts 1 s apart, 31 with
// enable_ambient_detection_retry), match them against enablement_selectors; an ambient pod is
// handed to the node agent (POST /cmdadd over <cni_agent_run_dir>/pluginevent.sock, 5 s) and ADD
// ends there. When the agent cannot be reached or refuses, ADD fails: an ambient pod must not
// start unredirected.
//
// A lookup failure fails ADD only with enable_ambient_detection_retry (as upstream); otherwise it
// is logged and the pod goes on to the sidecar path.
import * as path from 'node:path';
// In the payload's bundle, node:http is install/package.js's lazy proxy (a startup snapshot cannot
// hold http): imported here as src/kube/rest.ts imports it, it loads on the first request.
import * as http from 'node:http';
import { CniAddEvent, CNI_ADD_EVENT_PATH, PLUGIN_EVENT_SOCKET, encodeCniAddEvent, eventFromPrevResult } from '../ambient/cni-event';
import { podMatchesEnablement } from '../ambient/enablement';
import { CniError, ErrorCode } from '../cni/errors';
import { PluginErrorCode } from './errors';
import { KubeClient, KubeError, Namespace } from '../kube/client';
import { Pod } from '../kube/pod';
import { LogFields, Logger } from '../log/logger';
import { AmbientBranch } from './ports';
import { PluginConfig } from './config';

/** Upstream's podRetrievalInterval and its retry counts for ambient detection. */
export const AMBIENT_DETECTION = { intervalMs: 1000, attempts: 2, attemptsWithRetry: 31 } as const;
/** The plugin's request to the agent: as upstream's http.Client timeout. */
export const EVENT_TIMEOUT_MS = 5000;
/** Error body kept from the agent's answer. */
const MAX_ERROR_BODY = 1 << 20;

export interface AmbientBranchOptions {
  /** For tests: another socket than <cni_agent_run_dir>/pluginevent.sock. */
  readonly socketPath?: (conf: PluginConfig) => string;
  readonly timeoutMs?: number;
  readonly intervalMs?: number;
}

const noLog: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** Pod and namespace, both from one attempt (a stale pair is never mixed), retried as upstream. */
export async function getPodAndNamespace(
  client: KubeClient,
  namespace: string,
  name: string,
  uid: string,
  attempts: number,
  intervalMs: number,
  sleep: (ms: number) => Promise<void>,
  log: Logger,
): Promise<{ pod: Pod; ns: Namespace }> {
  if (!client.getNamespace) throw new KubeError('this Kubernetes client cannot read namespaces');
  let podErr: unknown;
  let nsErr: unknown;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    const [p, n] = await Promise.allSettled([client.getPod(namespace, name, uid), client.getNamespace(namespace)]);
    if (p.status === 'fulfilled' && n.status === 'fulfilled') return { pod: p.value, ns: n.value };
    podErr = p.status === 'rejected' ? p.reason : undefined;
    nsErr = n.status === 'rejected' ? n.reason : undefined;
    log.debug(`ambient detection: pod or namespace lookup failed (attempt ${attempt} of ${attempts})`, {
      podErr: podErr ? String((podErr as Error).message ?? podErr) : undefined,
      nsErr: nsErr ? String((nsErr as Error).message ?? nsErr) : undefined,
    });
    if (attempt < attempts) await sleep(intervalMs);
  }
  const msg = (e: unknown) => (e === undefined ? '<nil>' : String((e as Error).message ?? e));
  const transient = [podErr, nsErr].some((e) => e !== undefined && (!(e instanceof KubeError) || e.transient));
  throw new KubeError(`failed to get pod or namespace info: podErr=${msg(podErr)}, nsErr=${msg(nsErr)}`, transient ? undefined : 404);
}

/** POST the event to the agent; resolves on 200, rejects with a message naming the cause. */
export function postCniAddEvent(socketPath: string, event: CniAddEvent, timeoutMs = EVENT_TIMEOUT_MS): Promise<void> {
  const body = Buffer.from(encodeCniAddEvent(event), 'utf8');
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath,
        path: CNI_ADD_EVENT_PATH,
        method: 'POST',
        headers: { Host: 'unix', 'Content-Type': 'application/json', 'Content-Length': String(body.length) },
        timeout: timeoutMs,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          if (size < MAX_ERROR_BODY) chunks.push(c.subarray(0, MAX_ERROR_BODY - size));
          size += c.length;
        });
        res.on('end', () => {
          if (res.statusCode === 200) return resolve();
          const text = Buffer.concat(chunks).toString('utf8').trim();
          reject(new Error(`unable to push CNI event (status code ${res.statusCode}): ${text}`));
        });
        res.on('error', (e) => reject(new Error(`failed to read the agent's answer: ${e.message}`)));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (e: NodeJS.ErrnoException) => {
      const hint = e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? ' (is the istio-cni node agent running on this node with AMBIENT_ENABLED=true?)' : '';
      reject(new Error(`failed to send event request to ${socketPath}: ${e.message}${hint}`));
    });
    req.end(body);
  });
}

export function ambientBranch(opts: AmbientBranchOptions = {}): AmbientBranch {
  return {
    async add({ conf, args, netns, prevResult, client, log = noLog, sleep = (ms) => new Promise((r) => setTimeout(r, ms)), fields = {} }) {
      const attempts = conf.enableAmbientDetectionRetry ? AMBIENT_DETECTION.attemptsWithRetry : AMBIENT_DETECTION.attempts;
      let ambient: boolean;
      try {
        const { pod, ns } = await getPodAndNamespace(
          client,
          args.podNamespace,
          args.podName,
          args.podUid,
          attempts,
          opts.intervalMs ?? AMBIENT_DETECTION.intervalMs,
          sleep,
          log,
        );
        ambient = podMatchesEnablement(conf.enablementSelectors, pod as Parameters<typeof podMatchesEnablement>[1], ns.metadata?.labels);
      } catch (e) {
        const err = e as KubeError;
        log.error(`istio-cni cmdAdd failed to check if pod is ambient: ${err.message}`, fields);
        if (conf.enableAmbientDetectionRetry) {
          throw new CniError(
            err.transient === false ? PluginErrorCode.AmbientDetectionFailed : ErrorCode.TryAgainLater,
            `cannot tell whether pod ${args.podNamespace}/${args.podName} is ambient`,
            `${err.message} (after ${attempts} attempts)`,
          );
        }
        ambient = false;
      }
      if (!ambient) {
        log.debug('ambient: pod not ambient enabled, ignoring', fields);
        return 'not-ambient';
      }
      const socket = opts.socketPath?.(conf) ?? path.join(conf.agentRunDir, PLUGIN_EVENT_SOCKET);
      const event = eventFromPrevResult(netns, args.podName, args.podNamespace, prevResult);
      try {
        await postCniAddEvent(socket, event, opts.timeoutMs ?? EVENT_TIMEOUT_MS);
      } catch (e) {
        throw new CniError(PluginErrorCode.AmbientAgentUnreachable, 'istio-cni cmdAdd failed to contact node Istio CNI agent', (e as Error).message);
      }
      log.info('ADD: ambient pod handed to the node agent', { ...fields, ips: event.ips.length } as LogFields);
      return 'handled';
    },
  };
}
