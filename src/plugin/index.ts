export { handleCni, istioPlugin, planSidecar, SidecarPlan } from './istio';
export { PluginConfig, parsePluginConfig, DEFAULT_AGENT_RUN_DIR } from './config';
export { earlyDecision, isOwnAgentPod, sidecarSkipReason, SkipReason, SKIP_EXPLANATION } from './decide';
export { PluginRunLogger as Logger } from '../log/logger';
export { PluginDeps, PodNetns, RuleApplier, AmbientBranch } from './ports';
export { realDeps, realKube } from './wiring';
