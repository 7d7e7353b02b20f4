export { Annotation, Label, ProxyEnv } from './annotations';
export { ISTIO_INIT, ISTIO_PROXY, PodInfo, extractPodInfo, parseGoBool } from './podinfo';
export { ALWAYS_EXCLUDED_INBOUND, DEFAULT_PROXY_ID, DEFAULT_PROXY_PORT, Redirect, RedirectSetting, parseRedirect } from './redirect';
export { CaptureContext, FROM_PROCESS_ENV, captureConfigFor, routePlanFor } from './capture';
