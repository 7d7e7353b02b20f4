// Where the agent does its host-side work, and the start-up check of the host paths it needs.
//
// Istio's chart runs the agent in a pod netns of its own (no hostNetwork) with
// ALLOW_SWITCH_TO_HOST_NS=true; host-side work (the ambient probe-SNAT rule and probe sets) then
// goes to the node's netns, reached as /host/proc/1/ns/net. With hostNetwork the agent's own netns
// is the node's and both paths name the same namespace. Without the variable Istio silently works
// in its own netns; we check first that it IS the node's, and refuse otherwise, so host rules
// never land in the agent's pod netns.
//
// Every path is checked before anything listens or is written, so a missing mount stops start-up
// with one message naming it (readiness never turns true, nothing is half-installed).
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { AgentConfig } from './config';

/** This process's own network namespace. */
export const OWN_NETNS = '/proc/self/ns/net';

/** Where host-side work goes. */
export interface HostSide {
  /** The netns path the host rule and probe sets are written in. */
  readonly netns: string;
  /** True when that is not this process's own netns (ALLOW_SWITCH_TO_HOST_NS in a pod netns). */
  readonly switched: boolean;
}

/** A host path the agent needs is missing or unusable (a mount missing from the pod spec). */
export class HostPathError extends Error {
  override readonly name = 'HostPathError';
}

function nsInode(p: string, what: string, hint: string): bigint {
  try {
    return fs.statSync(p, { bigint: true }).ino;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new HostPathError(`cannot read ${what} ${p} (${code}): ${hint}`);
  }
}

/**
 * Decides where host-side work goes. `nodeNetns` is the node's netns as seen from here
 * (HOST_NETNS, default /host/proc/1/ns/net).
 */
export function planHostSide(allowSwitch: boolean, nodeNetns: string, ownNetns = OWN_NETNS): HostSide {
  const hint = allowSwitch
    ? "mount the node's /proc at /host/proc (the chart's cni-host-procfs volume) with CAP_SYS_PTRACE"
    : "mount the node's /proc at /host/proc, so the agent can check it runs in the node's network namespace";
  const node = nsInode(nodeNetns, "the node's network namespace", hint);
  const own = nsInode(ownNetns, "this process's network namespace", 'is /proc mounted?');
  if (allowSwitch) return { netns: nodeNetns, switched: node !== own };
  if (node === own) return { netns: ownNetns, switched: false };
  throw new HostPathError(
    `host-side work refused: this agent runs in a network namespace of its own, not the node's (${nodeNetns}), ` +
      "and ALLOW_SWITCH_TO_HOST_NS is not true; set ALLOW_SWITCH_TO_HOST_NS=true (Istio's chart does) or run the pod with hostNetwork: true",
  );
}

function requireDir(p: string, name: string, volume: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new HostPathError(`${name} ${p} is missing in this container (${code}): mount the node's directory there (the chart's ${volume} volume)`);
  }
  if (!st.isDirectory()) throw new HostPathError(`${name} ${p} is not a directory: mount the node's directory there (the chart's ${volume} volume)`);
}

/**
 * Checks the host mounts every agent needs (CNI dirs; the node's /proc for REPAIR_REPAIR_PODS).
 * Throws HostPathError naming the first missing one.
 */
export function checkHostPaths(cfg: AgentConfig): void {
  for (const d of cfg.install.cniBinTargetDirs) requireDir(d, 'CNI_BIN_DIR', 'cni-bin-dir');
  requireDir(cfg.install.mountedCNINetDir, 'MOUNTED_CNI_NET_DIR', 'cni-net-dir');
  if (cfg.repair.enabled && cfg.repair.repairPods) requireDir(cfg.repair.hostProcDir, 'REPAIR_HOST_PROC_DIR', 'cni-host-procfs');
}

/** The ambient agent's host paths (the ztunnel socket's dir) and where its host-side work goes. */
export function ambientHostSide(cfg: AgentConfig): HostSide {
  requireDir(path.dirname(cfg.ambient.ztunnelUDSAddress), 'the directory of ZTUNNEL_UDS_ADDRESS', 'cni-ztunnel-sock-dir');
  return planHostSide(cfg.hostSide.allowSwitch, cfg.hostSide.nodeNetns);
}
