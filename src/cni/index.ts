// The CNI execution protocol (spec mechanics only). Istio's plugin on top of it: ../plugin
// (handleCni lives there).
export { K8sArgs, parseCniArgs } from './args';
export { CniError, ErrorCode, errorResult } from './errors';
export { CniCommand, CniRequest, Env, parseCniEnv, parseCommand } from './env';
export { NetConf, PrevResult, parseNetConf, parsePrevResult, passThroughResult } from './netconf';
export { CniOutput, CniPlugin, dispatchCni, versionResult } from './skel';
export { CniVersion, LATEST_VERSION, SUPPORTED_VERSIONS } from './version';
