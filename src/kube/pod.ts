// The parts of a core/v1 Pod the plugin reads. Everything is optional: API objects come from
// outside and are checked where they are used.

export interface EnvVar {
  name?: string;
  value?: string;
  valueFrom?: unknown;
}

export interface Container {
  name?: string;
  args?: string[];
  env?: EnvVar[];
  securityContext?: { runAsUser?: number | null; runAsGroup?: number | null } | null;
}

export interface Pod {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    labels?: Record<string, string> | null;
    annotations?: Record<string, string> | null;
  };
  spec?: {
    initContainers?: Container[] | null;
    containers?: Container[] | null;
  };
}
