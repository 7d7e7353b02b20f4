// The production wiring of the CNI handler's ports (ports.ts): the addon and netlink for the pod
// netns, the kubeconfig's API client, the plugin logger, and the ambient branch.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Env } from '../cni/env';
import { SIDECAR_TABLE_REFS } from '../capture/apply';
import { HttpsKubeClient, KubeClient } from '../kube/client';
import { KUBECONFIG_NAME, parseKubeconfig } from '../kube/kubeconfig';
import { PluginLogger } from '../log/plugin-logger';
import { namesNetns, openPodNetns } from '../netns/handle';
import { addonDataplane } from '../netns/port';
import { TableRef } from '../nft/transaction';
import { ambientBranch } from './ambient';
import { PluginDeps, PodNetns, RuleApplier } from './ports';

// Loaded on first use only: unit tests and dry runs never load netlink.
const dualStackModule = () => import('../netns/dualstack');

export const realNetns = (): PodNetns => ({
  open: async (netnsPath) => openPodNetns(netnsPath),
  isDualStack: async (ns) => (await dualStackModule()).isDualStack(ns.path),
  stillNamed: async (netnsPath, ns) => namesNetns(netnsPath, ns),
});

/** The sidecar tables: every apply replaces all of them, so a table a new config no longer needs goes. */
export const realRules = (ownedTables: readonly TableRef[]): RuleApplier => addonDataplane(ownedTables);

/** The API client from <agentRunDir>/istio-cni-kubeconfig; its token is handed to `redact` before anything can log it. */
export function realKube(agentRunDir: string, redact: (secret: string | undefined) => void = () => {}): Promise<KubeClient> {
  const file = path.join(agentRunDir, KUBECONFIG_NAME);
  return fs.promises.readFile(file, 'utf8').then(
    (text) => {
      const ep = parseKubeconfig(text, file, (p) => fs.readFileSync(p, 'utf8'));
      redact(ep.token);
      return new HttpsKubeClient(ep);
    },
    (e: NodeJS.ErrnoException) => {
      throw new Error(`kubeconfig ${file}: ${e.code === 'ENOENT' ? 'does not exist (is the istio-cni node agent running?)' : e.message}`);
    },
  );
}

export function realDeps(env: Env = process.env, log: PluginLogger = new PluginLogger()): PluginDeps {
  return {
    kube: (dir) => realKube(dir, (t) => log.redact(t)),
    netns: realNetns(),
    rules: realRules(SIDECAR_TABLE_REFS),
    log,
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    now: () => Date.now(),
    env,
    ambient: ambientBranch(),
  };
}
