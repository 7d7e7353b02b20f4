// A KubeClient for tests: pods by namespace/name, scripted failures, and a record of calls.
import { KubeClient, KubeError } from './client';
import { Pod } from './pod';

export class FakeKubeClient implements KubeClient {
  readonly calls: string[] = [];
  private readonly pods = new Map<string, Pod>();
  /** Errors returned, in order, before the pod is served. */
  failures: KubeError[] = [];

  constructor(pods: Pod[] = []) {
    for (const p of pods) this.put(p);
  }

  put(pod: Pod): this {
    this.pods.set(`${pod.metadata?.namespace ?? ''}/${pod.metadata?.name ?? ''}`, pod);
    return this;
  }

  async getPod(namespace: string, name: string): Promise<Pod> {
    const key = `${namespace}/${name}`;
    this.calls.push(key);
    const f = this.failures.shift();
    if (f) throw f;
    const pod = this.pods.get(key);
    if (!pod) throw new KubeError(`pods "${name}" not found`, 404);
    return JSON.parse(JSON.stringify(pod)) as Pod;
  }
}
