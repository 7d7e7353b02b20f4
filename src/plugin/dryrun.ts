// `rules --dry-run --pod FILE`: what the plugin's ADD would apply to this pod, computed by the
// plugin's own functions (extractPodInfo -> planSidecar -> buildCapture -> render), with nothing
// applied. The output is always a valid nft script: the rules, and for a pod the plugin leaves
// alone, a `#` comment saying why. `--explain` adds `#` comments naming the setting, and where
// it came from (annotation, istio-proxy field, environment variable, default), behind each rule.
import { CniError } from '../cni/errors';
import { Env } from '../cni/env';
import { buildCapture } from '../capture/build';
import { CaptureConfig } from '../capture/config';
import { Pod } from '../kube/pod';
import { render } from '../nft/transaction';
import { ALWAYS_EXCLUDED_INBOUND, FROM_PROCESS_ENV, Redirect, extractPodInfo, routePlanFor } from '../redirect';
import { InputError } from '../values/errors';
import { Cidr, Group, Id, Port, parseCidr } from '../values/typed';
import { planSidecar } from './istio';

export interface PodDryRunOptions {
  /** Simulate a dual-stack pod netns (the plugin detects this from the netns). */
  readonly ipv6: boolean;
  readonly explain: boolean;
  /** The plugin process environment (owner groups, IPv4 loopback CIDR), as the plugin reads it. */
  readonly env: Env;
}

export interface PodDryRun {
  /** nft script text (rules, or only comments). */
  readonly text: string;
  readonly captured: boolean;
  /** Warnings the plugin would log (unparsable istio-proxy booleans). */
  readonly warnings: readonly string[];
}

/** A Pod from `kubectl get pod -o yaml|json` or a manifest. `source` names the file in errors. */
export async function parsePodManifest(text: string, source: string): Promise<Pod> {
  let doc: unknown;
  const t = text.trimStart();
  try {
    if (t.startsWith('{')) {
      doc = JSON.parse(text);
    } else {
      // Loaded here only: YAML is for this command, never for the plugin's start-up.
      const YAML = await import('yaml');
      const docs = YAML.parseAllDocuments(text);
      const real = docs.filter((d) => d.contents !== null);
      if (real.length !== 1) throw new Error(`expected one YAML document, found ${real.length}`);
      if (real[0].errors.length > 0) throw real[0].errors[0];
      doc = real[0].toJS();
    }
  } catch (e) {
    throw new InputError('--pod', source, `not a readable YAML or JSON document: ${(e as Error).message.split('\n')[0].replace(/:\s*$/, '')}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new InputError('--pod', source, 'expected a Pod object');
  const o = doc as Record<string, unknown>;
  if (o.kind === 'List') throw new InputError('--pod', source, 'is a List; give one Pod (kubectl get pod NAME -o yaml)');
  if (o.kind !== undefined && o.kind !== 'Pod') throw new InputError('--pod', source, `is a ${JSON.stringify(o.kind)}, expected kind Pod`);
  if (typeof o.spec !== 'object' || o.spec === null) throw new InputError('--pod', source, 'has no spec');
  return o as Pod;
}

export function dryRunPod(pod: Pod, opts: PodDryRunOptions): PodDryRun {
  const pi = extractPodInfo(pod);
  const name = `${pi.namespace || '(no namespace)'}/${pi.name || '(no name)'}`;
  const warnings: string[] = [];
  let plan: ReturnType<typeof planSidecar>;
  try {
    plan = planSidecar(pi, { netnsPath: '', enableIPv6: opts.ipv6, env: opts.env }, (m) => warnings.push(m));
  } catch (e) {
    // The plugin's code 103 / 4 errors carry the InputError that names the annotation and value.
    if (e instanceof CniError && e.cause instanceof InputError) throw e.cause;
    throw e;
  }
  if (!plan.capture) {
    return { text: `# pod ${name}: no sidecar capture: ${plan.reason}\n`, captured: false, warnings };
  }
  const rules = render(buildCapture(plan.config));
  if (!opts.explain) return { text: rules, captured: true, warnings };
  return { text: explain(name, plan.redirect, plan.config, rules, opts), captured: true, warnings };
}

// ---------------------------------------------------------------------------------------------
// --explain. Each setting the capture reads is listed with its value and origin. A rule is
// attributed to a setting when it disappears or changes once that setting is given another value
// (rendered by the same builder): so the attribution can never drift from what the builder does.

interface Setting {
  readonly name: string;
  readonly value: string;
  readonly from: string;
  /** The config with this setting changed; undefined when no rule can come from it. */
  readonly alt?: CaptureConfig;
}

const list = (xs: '*' | readonly (Port | Id | Group | Cidr | string)[]): string =>
  xs === '*' ? '*' : xs.length === 0 ? '(none)' : xs.map((x) => (typeof x === 'object' ? x.text : String(x))).join(',');

function settingsOf(r: Redirect, c: CaptureConfig, opts: PodDryRunOptions): Setting[] {
  const f = r.from;
  const envFrom = (key: string, dflt: string) => {
    const v = FROM_PROCESS_ENV.find(([k]) => k === key)?.[1];
    return v !== undefined && opts.env[v] !== undefined ? `environment variable ${v} of the plugin` : dflt;
  };
  const other = <T extends number>(v: T, a: number, b: number) => (v === a ? b : a) as T;
  const nonEmpty = (xs: '*' | readonly unknown[]) => xs === '*' || xs.length > 0;
  const alwaysOut = ALWAYS_EXCLUDED_INBOUND.join(',');
  const fixed = 'fixed on the CNI path (Istio default)';
  const s: Setting[] = [
    {
      name: 'interception mode',
      value: c.inboundInterceptionMode,
      from: f.mode,
      alt: { ...c, inboundInterceptionMode: c.inboundInterceptionMode === 'TPROXY' ? 'REDIRECT' : 'TPROXY' },
    },
    {
      name: 'outbound capture port',
      value: String(c.proxyPort),
      from: f.targetPort === 'default' ? fixed : f.targetPort,
      alt: { ...c, proxyPort: other(c.proxyPort, 15001, 15011) },
    },
    {
      name: 'inbound capture port',
      value: String(c.inboundCapturePort),
      from: fixed,
      alt: { ...c, inboundCapturePort: other(c.inboundCapturePort, 15006, 15016) },
    },
    {
      name: 'inbound tunnel port',
      value: String(c.inboundTunnelPort),
      from: fixed,
      alt: { ...c, inboundTunnelPort: other(c.inboundTunnelPort, 15008, 15018) },
    },
    {
      name: 'proxy UID',
      value: list(c.proxyUIDs),
      from: f.uid === 'default' ? 'default (no runAsUser on istio-proxy)' : f.uid,
      alt: { ...c, proxyUIDs: c.proxyUIDs.map((u) => other(u, 4242, 4243)) },
    },
    {
      name: 'proxy GID',
      value: list(c.proxyGIDs),
      from: f.gid === 'default' ? 'default (no runAsGroup on istio-proxy)' : f.gid,
      alt: { ...c, proxyGIDs: c.proxyGIDs.map((g) => other(g, 4242, 4243)) },
    },
    {
      name: 'outbound CIDRs captured',
      value: list(c.outboundIPRangesInclude),
      from: f.includeIPCidrs,
      alt: nonEmpty(c.outboundIPRangesInclude) ? { ...c, outboundIPRangesInclude: [] } : undefined,
    },
    {
      name: 'outbound CIDRs excluded',
      value: list(c.outboundIPRangesExclude),
      from: f.excludeIPCidrs,
      alt: nonEmpty(c.outboundIPRangesExclude) ? { ...c, outboundIPRangesExclude: [] } : undefined,
    },
    {
      name: 'inbound ports captured',
      value: c.inboundPortsInclude === '*' ? '*' : c.inboundPortsInclude.length === 0 ? '(none: no inbound capture)' : list(c.inboundPortsInclude),
      from: f.includeInboundPorts,
      alt: nonEmpty(c.inboundPortsInclude) ? { ...c, inboundPortsInclude: [] } : undefined,
    },
    {
      name: 'inbound ports excluded',
      value: list(c.inboundPortsExclude),
      from: `${f.excludeInboundPorts === 'default' ? 'default 15020' : f.excludeInboundPorts}; ${alwaysOut} always added`,
      alt: nonEmpty(c.inboundPortsExclude) ? { ...c, inboundPortsExclude: [] } : undefined,
    },
    {
      name: 'outbound ports captured',
      value: list(c.outboundPortsInclude),
      from: f.includeOutboundPorts,
      alt: nonEmpty(c.outboundPortsInclude) ? { ...c, outboundPortsInclude: [] } : undefined,
    },
    {
      name: 'outbound ports excluded',
      value: list(c.outboundPortsExclude),
      from: f.excludeOutboundPorts === 'default' ? 'default 15020' : f.excludeOutboundPorts,
      alt: nonEmpty(c.outboundPortsExclude) ? { ...c, outboundPortsExclude: [] } : undefined,
    },
    {
      name: 'excluded interfaces',
      value: list(c.excludeInterfaces),
      from: f.excludeInterfaces,
      alt: nonEmpty(c.excludeInterfaces) ? { ...c, excludeInterfaces: [] } : undefined,
    },
    {
      name: 'rerouted virtual interfaces',
      value: list(c.rerouteVirtualInterfaces),
      from: f.rerouteVirtualInterfaces,
      alt: nonEmpty(c.rerouteVirtualInterfaces) ? { ...c, rerouteVirtualInterfaces: [] } : undefined,
    },
    {
      name: 'DNS capture (all port 53)',
      value: String(c.redirectDNS),
      from: f.dnsRedirect,
      alt: c.redirectDNS ? { ...c, redirectDNS: false, captureAllDNS: false } : undefined,
    },
    { name: 'drop INVALID packets', value: String(c.dropInvalid), from: f.invalidDrop, alt: c.dropInvalid ? { ...c, dropInvalid: false } : undefined },
    { name: 'ISTIO_DUAL_STACK', value: String(c.dualStack), from: f.dualStack, alt: c.dualStack ? { ...c, dualStack: false } : undefined },
    {
      name: 'IPv6 rules',
      value: String(c.enableIPv6),
      from: opts.ipv6 ? '--ipv6 (simulates a dual-stack pod netns)' : 'pod netns taken as IPv4-only (--ipv6 simulates dual-stack)',
      alt: c.enableIPv6 ? { ...c, enableIPv6: false } : undefined,
    },
    {
      name: 'owner groups captured',
      value: list(c.ownerGroupsInclude),
      from: envFrom('ownerGroupsInclude', 'default'),
      alt: c.ownerGroupsInclude !== '*' ? { ...c, ownerGroupsInclude: '*' } : undefined,
    },
    {
      name: 'owner groups excluded',
      value: list(c.ownerGroupsExclude),
      from: envFrom('ownerGroupsExclude', 'default'),
      alt: c.ownerGroupsExclude.length > 0 ? { ...c, ownerGroupsExclude: [] } : undefined,
    },
    {
      name: 'IPv4 loopback CIDR',
      value: c.hostIPv4LoopbackCidr.text,
      from: envFrom('hostIPv4LoopbackCidr', 'default'),
      alt: { ...c, hostIPv4LoopbackCidr: parseCidr('', c.hostIPv4LoopbackCidr.text === '127.0.0.2/32' ? '127.0.0.3/32' : '127.0.0.2/32') },
    },
  ];
  if (c.inboundInterceptionMode === 'TPROXY') {
    s.push({ name: 'TPROXY mark', value: String(c.inboundTProxyMark), from: fixed, alt: { ...c, inboundTProxyMark: other(c.inboundTProxyMark, 1337, 1339) } });
  }
  return s;
}

/** Lines of `actual` that are not in `alt`, counted as a multiset. */
function changedLines(actual: readonly string[], alt: readonly string[]): Set<number> {
  const left = new Map<string, number>();
  for (const l of alt) left.set(l, (left.get(l) ?? 0) + 1);
  const out = new Set<number>();
  actual.forEach((l, i) => {
    const n = left.get(l) ?? 0;
    if (n > 0) left.set(l, n - 1);
    else out.add(i);
  });
  return out;
}

function explain(name: string, r: Redirect, c: CaptureConfig, rules: string, opts: PodDryRunOptions): string {
  const settings = settingsOf(r, c, opts);
  const lines = rules.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const byLine = lines.map(() => [] as string[]);
  for (const s of settings) {
    if (!s.alt) continue;
    let alt: string[];
    try {
      alt = render(buildCapture(s.alt)).split('\n');
    } catch {
      continue;
    }
    for (const i of changedLines(lines, alt)) byLine[i].push(s.name);
  }

  const out: string[] = [`# pod ${name}: sidecar capture, ${c.inboundInterceptionMode} mode, ${c.enableIPv6 ? 'IPv4 and IPv6' : 'IPv4 only'}`, '#'];
  const w = Math.max(...settings.map((s) => s.name.length));
  const vw = Math.min(40, Math.max(...settings.map((s) => s.value.length)));
  out.push(`# ${'setting'.padEnd(w)}  ${'value'.padEnd(vw)}  from`);
  for (const s of settings) out.push(`# ${s.name.padEnd(w)}  ${s.value.padEnd(vw)}  ${s.from}`);
  const routes = routePlanFor(c);
  out.push('#');
  if (!routes) out.push('# routes: none needed');
  else {
    if (routes.tproxy) {
      const fams = routes.tproxy.ipv6 ? 'IPv4 and IPv6' : 'IPv4';
      out.push(
        `# routes (${fams}): ip rule add fwmark ${routes.tproxy.mark} lookup ${routes.tproxy.table}; ip route add local default dev lo table ${routes.tproxy.table}  (from: interception mode TPROXY with inbound ports captured)`,
      );
    }
    if (routes.loopbackV6) out.push('# address: ::6/128 on lo, the IPv6 passthrough source  (from: IPv6 rules)');
  }
  out.push('# rules without a "from" line are the fixed skeleton of the capture');
  out.push('');
  let last = '';
  lines.forEach((l, i) => {
    const from = byLine[i].join(', ');
    if (from !== '' && from !== last) out.push(`# from: ${from}`);
    else if (from === '' && last !== '') out.push('# from: skeleton');
    last = from;
    out.push(l);
  });
  return `${out.join('\n')}\n`;
}
