// CNI_ARGS: "K=V;K=V" pairs (spec, section 2; libcni's LoadArgs for the details). Keys are
// case-sensitive and order does not matter; unknown keys are an error unless IgnoreUnknown is
// true; a pair without exactly one "=" is an error.
import { CniError, ErrorCode } from './errors';

export interface K8sArgs {
  readonly podName: string;
  readonly podNamespace: string;
  readonly podUid: string;
  readonly infraContainerId: string;
  readonly ignoreUnknown: boolean;
  /** Pairs we do not know, kept for logging (only allowed with IgnoreUnknown). */
  readonly unknown: readonly string[];
}

const KNOWN: Record<string, keyof Omit<K8sArgs, 'ignoreUnknown' | 'unknown'>> = {
  K8S_POD_NAME: 'podName',
  K8S_POD_NAMESPACE: 'podNamespace',
  K8S_POD_UID: 'podUid',
  K8S_POD_INFRA_CONTAINER_ID: 'infraContainerId',
};

function invalid(details: string): CniError {
  return new CniError(ErrorCode.InvalidEnvironment, 'invalid CNI_ARGS', details);
}

export function parseCniArgs(text: string): K8sArgs {
  const out = { podName: '', podNamespace: '', podUid: '', infraContainerId: '', ignoreUnknown: false };
  const unknown: string[] = [];
  if (text === '') return { ...out, unknown };
  for (const pair of text.split(';')) {
    const kv = pair.split('=');
    if (kv.length !== 2) throw invalid(`pair ${JSON.stringify(pair)} is not KEY=VALUE`);
    const [key, value] = kv;
    if (key === 'IgnoreUnknown') {
      const v = value.toLowerCase();
      if (v === '1' || v === 'true') out.ignoreUnknown = true;
      else if (v === '0' || v === 'false') out.ignoreUnknown = false;
      else throw invalid(`IgnoreUnknown=${JSON.stringify(value)}: expected 1, true, 0 or false`);
    } else if (Object.prototype.hasOwnProperty.call(KNOWN, key)) {
      out[KNOWN[key]] = value;
    } else {
      unknown.push(pair);
    }
  }
  if (unknown.length > 0 && !out.ignoreUnknown) {
    throw invalid(`unknown keys ${JSON.stringify(unknown)} (set IgnoreUnknown=1 to allow them)`);
  }
  return { ...out, unknown };
}
