// The ports of the CNI handler: everything it needs from the outside world, as small interfaces,
// so the handler is a pure function of (env, stdin, deps) in tests and can run inside the agent.
// The production wiring is in wiring.ts.
import { K8sArgs } from '../cni/args';
import { PrevResult } from '../cni/netconf';
import { Env } from '../cni/env';
import { KubeClient } from '../kube/client';
import { LogFields, PluginRunLogger } from '../log/logger';
import type { NetnsRef, NetnsState } from '../netns/handle';
import type { DataplanePort } from '../netns/port';
import { PluginConfig } from './config';

export type { NetnsState };

/**
 * CNI_NETNS as this request reaches it: the pod's netns with the handle every effect of the
 * request goes through (the handler releases it), or why there is none.
 */
export type PodNetnsRef = { readonly state: 'ok'; readonly netns: NetnsRef } | { readonly state: Exclude<NetnsState, 'ok'> };

export interface PodNetns {
  /**
   * Opens CNI_NETNS once per request (from the path, or from the descriptor the shim sent);
   * messages name CNI_NETNS (the handle's source).
   */
  open(netnsPath: string): Promise<PodNetnsRef>;
  /** Whether the pod netns has IPv6 addresses besides link-local and loopback: IPv6 rules then. */
  isDualStack(ns: NetnsRef): Promise<boolean>;
  /**
   * Whether CNI_NETNS still names `ns` once the rules are in: a netns removed (or replaced) while
   * ADD ran fails the ADD, as the rules went to a namespace the pod no longer has.
   */
  stillNamed(netnsPath: string, ns: NetnsRef): Promise<boolean>;
}

/** The sidecar path's effects on a pod netns (src/netns/port.ts). */
export type RuleApplier = DataplanePort;

/** The ambient branch: hands an ambient pod to the node agent (src/plugin/ambient.ts). */
export interface AmbientBranch {
  /** 'handled' ends ADD successfully (the pod was handed to the node agent). */
  add(ctx: {
    conf: PluginConfig;
    args: K8sArgs;
    netns: string;
    prevResult?: PrevResult;
    client: KubeClient;
    /** The run's logger and sleep (PluginDeps'), with the pod's log fields. */
    log?: PluginRunLogger;
    sleep?: (ms: number) => Promise<void>;
    fields?: LogFields;
  }): Promise<'handled' | 'not-ambient'>;
}

export interface PluginDeps {
  /** A client for the API server, from <agentRunDir>/istio-cni-kubeconfig (rejects when unusable). */
  kube(agentRunDir: string): Promise<KubeClient>;
  netns: PodNetns;
  rules: RuleApplier;
  log: PluginRunLogger;
  sleep(ms: number): Promise<void>;
  now(): number;
  /** The plugin process environment (owner groups, loopback CIDR). */
  env: Env;
  ambient: AmbientBranch;
}
