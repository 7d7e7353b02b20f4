/** The ObjectMeta fields of a pod the agent's controllers read. */
export interface PodObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  labels?: Record<string, string> | null;
  annotations?: Record<string, string> | null;
  deletionTimestamp?: string | null;
}
