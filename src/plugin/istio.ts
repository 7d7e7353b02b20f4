// Istio's CNI plugin behaviour on top of the CNI protocol: ADD sets up sidecar capture in the pod
// netns (or leaves the pod alone, for the reasons plugin.go has), DEL removes it, CHECK verifies
// it, STATUS reports whether ADD could work, GC has nothing to collect.
import { K8sArgs, parseCniArgs } from '../cni/args';
import { CniError, ErrorCode } from '../cni/errors';
import { PluginErrorCode, internalError } from './errors';
import { CniRequest, Env } from '../cni/env';
import { JsonObject } from '../cni/json';
import { NetConf, passThroughResult } from '../cni/netconf';
import { CniOutput, CniPlugin, dispatchCni } from '../cni/skel';
import { CaptureApplyError, applySidecarCapture, removeSidecarCapture } from '../capture/apply';
import { buildCapture } from '../capture/build';
import { CaptureConfig } from '../capture/config';
import { KubeClient, KubeError, getPodWithRetries } from '../kube/client';
import { Transaction, tablesOf } from '../nft/transaction';
import { captureConfigFor, extractPodInfo, parseRedirect, PodInfo, Redirect } from '../redirect';
import { InputError } from '../values/errors';
import { isNetnsFault } from '../netns/errors';
import { PluginConfig, parsePluginConfig } from './config';
import { SKIP_EXPLANATION, earlyDecision, sidecarSkipReason } from './decide';
import { LogFields } from '../log/logger';
import type { NetnsRef } from '../netns/handle';
import { PluginDeps, PodNetnsRef } from './ports';

/**
 * The whole CNI plugin as one function: environment and stdin in, stdout text and exit code out.
 * It writes nothing itself (logs go through deps.log), so it can run in the short-lived process a
 * runtime starts or inside the node agent.
 */
export function handleCni(env: Env, stdin: string, deps: PluginDeps): Promise<CniOutput> {
  return dispatchCni(env, stdin, istioPlugin(deps));
}

/** What a pod gets on ADD: the decision and, for captured pods, the rules. Exposed for dry runs. */
export type SidecarPlan =
  { readonly capture: false; readonly reason: string } | { readonly capture: true; readonly redirect: Redirect; readonly config: CaptureConfig };

/** Pod -> plan, pure: skip reason, or the redirect and the capture config it yields. */
export function planSidecar(pi: PodInfo, ctx: { netnsPath: string; enableIPv6: boolean; env?: Env }, warn: (msg: string) => void = () => {}): SidecarPlan {
  const skip = sidecarSkipReason(pi);
  if (skip) return { capture: false, reason: SKIP_EXPLANATION[skip] };
  // The InputError stays reachable as `cause`, for the dry run's exit-2 message.
  const asCni = (e: unknown, code: number, msg: (e: InputError) => string): unknown => {
    if (!(e instanceof InputError)) return e;
    const err = new CniError(code, msg(e), e.message);
    err.cause = e;
    return err;
  };
  let redirect: Redirect;
  try {
    redirect = parseRedirect(pi, warn);
  } catch (e) {
    throw asCni(e, PluginErrorCode.InvalidPodSettings, (ie) => `pod ${pi.namespace}/${pi.name}: ${ie.message}`);
  }
  let config: CaptureConfig;
  try {
    config = captureConfigFor(redirect, ctx);
  } catch (e) {
    throw asCni(e, ErrorCode.InvalidEnvironment, (ie) => ie.message);
  }
  return { capture: true, redirect, config };
}

export function istioPlugin(deps: PluginDeps): CniPlugin {
  const { log } = deps;

  const setup = (req: CniRequest, conf: NetConf) => {
    const pc = parsePluginConfig(conf.raw);
    log.configure?.({ level: pc.logLevel, agentRunDir: pc.agentRunDir });
    const args = parseCniArgs(req.args);
    const fields: LogFields = {
      pod: args.podNamespace || args.podName ? `${args.podNamespace}/${args.podName}` : undefined,
      containerId: req.containerId || undefined,
      netns: req.netns || undefined,
      ifName: req.ifName || undefined,
    };
    return { pc, args, fields };
  };

  /** Runs `fn` with CNI_NETNS opened once for the request, and always releases it. */
  const withNetns = async <T>(req: CniRequest, fn: (ns: PodNetnsRef) => Promise<T>): Promise<T> => {
    const ns = await deps.netns.open(req.netns);
    try {
      if (ns.state === 'own') {
        throw new CniError(
          ErrorCode.InvalidNetns,
          "plugin's netns and netns from CNI_NETNS should not be the same",
          `CNI_NETNS=${req.netns} is the plugin's own network namespace`,
        );
      }
      return await fn(ns);
    } finally {
      if (ns.state === 'ok') ns.netns.release();
    }
  };

  const requireNetns = (req: CniRequest, ns: PodNetnsRef): NetnsRef => {
    if (ns.state === 'ok') return ns.netns;
    throw new CniError(
      PluginErrorCode.NetnsUnusable,
      `cannot use CNI_NETNS ${req.netns}`,
      ns.state === 'missing' ? 'it does not exist' : 'it is not a network namespace',
    );
  };

  const kubeClient = async (pc: PluginConfig): Promise<KubeClient> => {
    try {
      return await deps.kube(pc.agentRunDir);
    } catch (e) {
      throw new CniError(PluginErrorCode.KubeconfigUnusable, 'cannot create a Kubernetes client', (e as Error).message);
    }
  };

  const lookupPod = async (client: KubeClient, pc: PluginConfig, args: K8sArgs, fields: LogFields): Promise<PodInfo> => {
    const started = deps.now();
    try {
      const pod = await getPodWithRetries(client, args.podNamespace, args.podName, {
        podUid: args.podUid,
        attempts: pc.podLookup.attempts,
        intervalMs: pc.podLookup.intervalMs,
        sleep: deps.sleep,
        onAttemptFailed: (attempt, err) => {
          const log1 = attempt === 1 ? log.warn : log.debug;
          log1(`pod lookup failed (attempt ${attempt} of ${pc.podLookup.attempts})`, { ...fields, error: err.message });
        },
      });
      return extractPodInfo(pod);
    } catch (e) {
      const err = e instanceof KubeError ? e : new KubeError(String(e));
      const details = `${err.message} (after ${pc.podLookup.attempts} attempts in ${deps.now() - started} ms)`;
      throw err.transient
        ? new CniError(ErrorCode.TryAgainLater, `cannot reach the Kubernetes API to get pod ${args.podNamespace}/${args.podName}`, details)
        : new CniError(PluginErrorCode.PodLookupFailed, `failed to get pod ${args.podNamespace}/${args.podName}`, details);
    }
  };

  /** True when the ambient branch took the pod. */
  const ambient = async (pc: PluginConfig, args: K8sArgs, req: CniRequest, conf: NetConf, client: KubeClient, fields: LogFields) => {
    if (!pc.ambientEnabled) return false;
    const r = await deps.ambient.add({ conf: pc, args, netns: req.netns, prevResult: conf.prevResult, client, log, sleep: deps.sleep, fields });
    return r === 'handled';
  };

  const plan = async (req: CniRequest, pi: PodInfo, fields: LogFields, ns: PodNetnsRef): Promise<SidecarPlan> => {
    const skip = sidecarSkipReason(pi);
    if (skip) return { capture: false, reason: SKIP_EXPLANATION[skip] };
    // Validate the pod's settings before looking at the netns: a bad annotation is the user's
    // error to fix whatever the netns.
    planSidecar(pi, { netnsPath: req.netns, enableIPv6: false, env: deps.env }, (m) => log.warn(m, fields));
    const netns = requireNetns(req, ns);
    let enableIPv6: boolean;
    try {
      enableIPv6 = await deps.netns.isDualStack(netns);
    } catch (e) {
      throw new CniError(PluginErrorCode.NetnsUnusable, `cannot read the addresses in ${req.netns}`, (e as Error).message);
    }
    return planSidecar(pi, { netnsPath: req.netns, enableIPv6, env: deps.env });
  };

  return {
    async add(req, conf): Promise<JsonObject> {
      const { pc, args, fields } = setup(req, conf);
      const result = passThroughResult(conf);
      const early = earlyDecision(pc, args);
      if (early.pass) {
        log.info(`ADD: pod passed through (${early.reason})`, fields);
        return result;
      }
      return withNetns(req, async (ns) => {
        const client = await kubeClient(pc);
        if (await ambient(pc, args, req, conf, client, fields)) return result;
        const pi = await lookupPod(client, pc, args, fields);
        const p = await plan(req, pi, fields, ns);
        if (!p.capture) {
          log.info(`ADD: no sidecar capture: ${p.reason}`, fields);
          return result;
        }
        const netns = requireNetns(req, ns);
        let tx: Transaction;
        try {
          tx = await applySidecarCapture(deps.rules, netns, p.config);
        } catch (e) {
          if (!(e instanceof CaptureApplyError)) throw e;
          const details = e.message;
          if (e.stage === 'routes') throw new CniError(PluginErrorCode.RuleApplyFailed, `failed to set up routes in ${req.netns}`, details);
          // The netns gone (or unlistable) before anything changed is the netns's fault, not the rules'.
          if (isNetnsFault(e.error)) throw new CniError(PluginErrorCode.NetnsUnusable, `cannot use CNI_NETNS ${req.netns}`, details);
          throw new CniError(PluginErrorCode.RuleApplyFailed, `failed to apply nftables rules in ${req.netns}`, details);
        }
        if (!(await deps.netns.stillNamed(req.netns, netns))) {
          throw new CniError(
            PluginErrorCode.NetnsUnusable,
            `network namespace ${req.netns} was removed while ADD ran`,
            'CNI_NETNS no longer names the namespace the rules were applied to',
          );
        }
        log.info('ADD: sidecar capture applied', {
          ...fields,
          mode: p.redirect.mode,
          ipv6: p.config.enableIPv6,
          tables: tablesOf(tx).map((t) => t.table),
        });
        return result;
      });
    },

    async del(req, conf) {
      if (req.netns === '') {
        log.debug('DEL: no CNI_NETNS, nothing to remove');
        return;
      }
      let fields: LogFields = { containerId: req.containerId, netns: req.netns };
      try {
        const s = setup(req, conf);
        fields = s.fields;
        const early = earlyDecision(s.pc, s.args);
        if (early.pass) {
          log.debug(`DEL: nothing to remove (${early.reason})`, fields);
          return;
        }
      } catch (e) {
        // DEL is best effort: a config or CNI_ARGS problem must not keep the rules in place.
        log.warn('DEL: ignoring a config problem', { ...fields, error: (e as Error).message });
      }
      await withNetns(req, async (ns) => {
        if (ns.state !== 'ok') {
          log.debug(`DEL: netns ${ns.state}, nothing to remove`, fields);
          return;
        }
        try {
          await removeSidecarCapture(deps.rules, ns.netns);
          log.info('DEL: sidecar capture removed', fields);
        } catch (e) {
          // The netns is being torn down; failing DEL would only make the runtime retry.
          log.warn('DEL: could not remove everything', { ...fields, error: (e as Error).message });
        }
      });
    },

    async check(req, conf) {
      const { pc, args, fields } = setup(req, conf);
      const early = earlyDecision(pc, args);
      if (early.pass) return;
      await withNetns(req, async (ns) => {
        const netns = requireNetns(req, ns);
        const client = await kubeClient(pc);
        if (pc.ambientEnabled) {
          log.debug('CHECK: ambient pods are checked by the node agent', fields);
        }
        const pi = await lookupPod(client, pc, args, fields);
        const p = await plan(req, pi, fields, ns);
        if (!p.capture) return;
        const want = tablesOf(buildCapture(p.config));
        const have = await deps.rules.listTables(netns);
        const missing = want.filter((w) => !have.some((h) => h.family === w.family && h.table === w.table));
        if (missing.length > 0) {
          throw new CniError(
            PluginErrorCode.RulesMissing,
            `sidecar capture is missing in ${req.netns}`,
            `tables not found: ${missing.map((t) => `${t.family} ${t.table}`).join(', ')}`,
          );
        }
      });
    },

    async status(_req, conf) {
      const pc = parsePluginConfig(conf.raw);
      try {
        await deps.kube(pc.agentRunDir);
      } catch (e) {
        throw new CniError(ErrorCode.NotAvailable, 'istio-cni-ts cannot service ADD', (e as Error).message);
      }
    },

    async gc() {
      // Capture rules live inside pod network namespaces and go away with them: nothing to collect.
    },

    classify: (e) => internalError(e),

    onError: (e, command) => {
      log.error(`${command ?? 'CNI'} failed: ${e.msg}`, { code: e.code, details: e.details });
    },
  };
}
