// Label and field selectors evaluated on this side, with the API server's grammar, so that one
// watch of the node's pods can serve a consumer that asked for a narrower set (the repair
// controller's REPAIR_LABEL_SELECTORS / REPAIR_FIELD_SELECTORS) and that consumer still sees
// exactly what the server would have sent it. Parse errors name the selector and the term.
import { Pod } from './pod';

export type PodPredicate = (pod: Pod) => boolean;

export class SelectorError extends Error {
  override name = 'SelectorError';
}

/** Splits on commas outside parentheses (`a in (x,y),b` has two terms). */
function terms(sel: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of sel) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur.trim());
      cur = '';
    } else cur += ch;
  }
  out.push(cur.trim());
  return out.filter((t) => t !== '');
}

/**
 * A label selector (`k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, ANDed) as a
 * predicate on a label map; '' selects everything.
 */
export function labelSelector(sel: string): (labels: Record<string, string> | null | undefined) => boolean {
  const tests = terms(sel).map((t): ((l: Record<string, string>) => boolean) => {
    let m = /^([^\s!=()]+)\s+(in|notin)\s+\(([^()]*)\)$/.exec(t);
    if (m) {
      const [, k, op, list] = m;
      const vals = new Set(list.split(',').map((v) => v.trim()));
      return op === 'in' ? (l) => k in l && vals.has(l[k]) : (l) => !(k in l) || !vals.has(l[k]);
    }
    m = /^([^\s!=()]+)\s*(==|=|!=)\s*([^\s!=(),]*)$/.exec(t);
    if (m) {
      const [, k, op, v] = m;
      return op === '!=' ? (l) => l[k] !== v : (l) => k in l && l[k] === v;
    }
    m = /^(!?)\s*([^\s!=()]+)$/.exec(t);
    if (m) return m[1] ? (l) => !(m![2] in l) : (l) => m![2] in l;
    throw new SelectorError(`label selector ${JSON.stringify(sel)}: cannot read ${JSON.stringify(t)}`);
  });
  return (labels) => {
    const l = labels ?? {};
    return tests.every((f) => f(l));
  };
}

/** The pod fields the API server accepts in a field selector, read from a pod as it serves them. */
const POD_FIELDS: Record<string, (p: Pod) => string> = {
  'metadata.name': (p) => p.metadata?.name ?? '',
  'metadata.namespace': (p) => p.metadata?.namespace ?? '',
  'spec.nodeName': (p) => p.spec?.nodeName ?? '',
  'spec.restartPolicy': (p) => p.spec?.restartPolicy ?? '',
  'spec.schedulerName': (p) => p.spec?.schedulerName ?? '',
  'spec.serviceAccountName': (p) => p.spec?.serviceAccountName ?? '',
  'spec.hostNetwork': (p) => String(p.spec?.hostNetwork ?? false),
  'status.phase': (p) => p.status?.phase ?? '',
  'status.podIP': (p) => p.status?.podIP ?? '',
  'status.nominatedNodeName': (p) => p.status?.nominatedNodeName ?? '',
};

/** A pod field selector (`f=v`, `f==v`, `f!=v`, ANDed) as a predicate; '' selects everything. */
export function podFieldSelector(sel: string): PodPredicate {
  const tests = terms(sel).map((t): PodPredicate => {
    const m = /^([^\s!=]+)\s*(==|=|!=)\s*(.*)$/.exec(t);
    if (!m) throw new SelectorError(`field selector ${JSON.stringify(sel)}: cannot read ${JSON.stringify(t)}`);
    const [, field, op, v] = m;
    const read = POD_FIELDS[field];
    if (!read) throw new SelectorError(`field selector ${JSON.stringify(sel)}: pods have no selectable field ${JSON.stringify(field)}`);
    return op === '!=' ? (p) => read(p) !== v : (p) => read(p) === v;
  });
  return (p) => tests.every((f) => f(p));
}
