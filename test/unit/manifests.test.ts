// Offline validation of install/kubernetes/{sidecar,ambient}/*.yaml: a strict structural schema for
// the Kubernetes API types these manifests use (field names, types, enums, name formats; an unknown field is an
// error, as `kubectl apply --validate=strict` would say), then cross-object checks, then the
// agent's own parser over the ConfigMap and env so a deployed agent cannot fail its start-up.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PARAMS, parseAgentConfig } from '../../src/agent/config';
import { repairAction, repairApiRules } from '../../src/agent/repair/controller';
import { PACKAGE_ROOT } from '../support/conformance';
import { PROFILES, Profile, loadManifests } from '../support/manifests';

type S =
  | 'string'
  | 'int'
  | 'bool'
  | 'quantity'
  | 'intOrString'
  | { enum: string[] }
  | { re: RegExp; what: string }
  | { list: S }
  | { map: S }
  | { obj: Record<string, S>; required?: string[] };

const dns1123 = { re: /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/, what: 'a DNS-1123 name' } as const;
const label = { re: /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, what: 'a DNS-1123 label' } as const;
const portName = { re: /^(?=.{1,15}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, what: 'an IANA service name' } as const;
const envName = { re: /^[-._a-zA-Z][-._a-zA-Z0-9]*$/, what: 'an environment variable name' } as const;
const strList: S = { list: 'string' };

const objectMeta: S = {
  obj: { name: dns1123, namespace: label, labels: { map: 'string' }, annotations: { map: 'string' } },
  required: ['name'],
};
const labelSelector: S = {
  obj: {
    matchLabels: { map: 'string' },
    matchExpressions: {
      list: { obj: { key: 'string', operator: { enum: ['In', 'NotIn', 'Exists', 'DoesNotExist'] }, values: strList }, required: ['key', 'operator'] },
    },
  },
};
const httpGet: S = { obj: { path: 'string', port: 'intOrString', host: 'string', scheme: { enum: ['HTTP', 'HTTPS'] } }, required: ['port'] };
const probe: S = {
  obj: {
    httpGet,
    exec: { obj: { command: strList } },
    tcpSocket: { obj: { port: 'intOrString', host: 'string' }, required: ['port'] },
    initialDelaySeconds: 'int',
    periodSeconds: 'int',
    timeoutSeconds: 'int',
    successThreshold: 'int',
    failureThreshold: 'int',
    terminationGracePeriodSeconds: 'int',
  },
};
const envVar: S = {
  obj: {
    name: envName,
    value: 'string',
    valueFrom: {
      obj: {
        fieldRef: { obj: { fieldPath: 'string', apiVersion: 'string' }, required: ['fieldPath'] },
        configMapKeyRef: { obj: { name: dns1123, key: 'string', optional: 'bool' }, required: ['key'] },
        resourceFieldRef: {
          obj: { resource: { enum: ['limits.cpu', 'limits.memory', 'requests.cpu', 'requests.memory'] }, divisor: 'quantity', containerName: 'string' },
          required: ['resource'],
        },
      },
    },
  },
  required: ['name'],
};
const container: S = {
  obj: {
    name: label,
    image: 'string',
    imagePullPolicy: { enum: ['Always', 'IfNotPresent', 'Never'] },
    command: strList,
    args: strList,
    workingDir: 'string',
    env: { list: envVar },
    envFrom: {
      list: { obj: { prefix: 'string', configMapRef: { obj: { name: dns1123, optional: 'bool' } }, secretRef: { obj: { name: dns1123, optional: 'bool' } } } },
    },
    ports: {
      list: {
        obj: { name: portName, containerPort: 'int', hostPort: 'int', protocol: { enum: ['TCP', 'UDP', 'SCTP'] }, hostIP: 'string' },
        required: ['containerPort'],
      },
    },
    readinessProbe: probe,
    livenessProbe: probe,
    startupProbe: probe,
    resources: { obj: { requests: { map: 'quantity' }, limits: { map: 'quantity' } } },
    securityContext: {
      obj: {
        runAsUser: 'int',
        runAsGroup: 'int',
        runAsNonRoot: 'bool',
        privileged: 'bool',
        allowPrivilegeEscalation: 'bool',
        readOnlyRootFilesystem: 'bool',
        capabilities: { obj: { add: { list: { re: /^[A-Z_]+$/, what: 'a capability' } }, drop: { list: { re: /^[A-Z_]+$/, what: 'a capability' } } } },
        seccompProfile: { obj: { type: { enum: ['RuntimeDefault', 'Unconfined', 'Localhost'] }, localhostProfile: 'string' }, required: ['type'] },
      },
    },
    volumeMounts: {
      list: {
        obj: {
          name: label,
          mountPath: 'string',
          readOnly: 'bool',
          subPath: 'string',
          mountPropagation: { enum: ['None', 'HostToContainer', 'Bidirectional'] },
        },
        required: ['name', 'mountPath'],
      },
    },
  },
  required: ['name', 'image'],
};
const podSpec: S = {
  obj: {
    serviceAccountName: dns1123,
    priorityClassName: 'string',
    hostNetwork: 'bool',
    hostPID: 'bool',
    dnsPolicy: { enum: ['ClusterFirst', 'ClusterFirstWithHostNet', 'Default', 'None'] },
    nodeSelector: { map: 'string' },
    tolerations: {
      list: {
        obj: {
          key: 'string',
          operator: { enum: ['Exists', 'Equal'] },
          value: 'string',
          effect: { enum: ['NoSchedule', 'PreferNoSchedule', 'NoExecute'] },
          tolerationSeconds: 'int',
        },
      },
    },
    terminationGracePeriodSeconds: 'int',
    containers: { list: container },
    initContainers: { list: container },
    volumes: {
      list: {
        obj: {
          name: label,
          hostPath: {
            obj: { path: 'string', type: { enum: ['', 'DirectoryOrCreate', 'Directory', 'FileOrCreate', 'File', 'Socket', 'CharDevice', 'BlockDevice'] } },
            required: ['path'],
          },
          configMap: { obj: { name: dns1123 } },
          emptyDir: { obj: {} },
        },
        required: ['name'],
      },
    },
  },
  required: ['containers'],
};
const verbs = { enum: ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection', '*'] };
const policyRule: S = { obj: { apiGroups: strList, resources: strList, resourceNames: strList, verbs: { list: verbs } }, required: ['verbs'] };
const roleRef: S = {
  obj: { apiGroup: { enum: ['rbac.authorization.k8s.io'] }, kind: { enum: ['Role', 'ClusterRole'] }, name: dns1123 },
  required: ['apiGroup', 'kind', 'name'],
};
const subject: S = {
  obj: { kind: { enum: ['ServiceAccount', 'User', 'Group'] }, name: 'string', namespace: label, apiGroup: 'string' },
  required: ['kind', 'name'],
};

const KINDS: Record<string, { apiVersion: string; schema: Record<string, S>; required: string[] }> = {
  ServiceAccount: { apiVersion: 'v1', schema: { metadata: objectMeta }, required: ['metadata'] },
  ConfigMap: { apiVersion: 'v1', schema: { metadata: objectMeta, data: { map: 'string' } }, required: ['metadata'] },
  ClusterRole: { apiVersion: 'rbac.authorization.k8s.io/v1', schema: { metadata: objectMeta, rules: { list: policyRule } }, required: ['metadata'] },
  Role: { apiVersion: 'rbac.authorization.k8s.io/v1', schema: { metadata: objectMeta, rules: { list: policyRule } }, required: ['metadata'] },
  ClusterRoleBinding: {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    schema: { metadata: objectMeta, roleRef, subjects: { list: subject } },
    required: ['metadata', 'roleRef'],
  },
  RoleBinding: {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    schema: { metadata: objectMeta, roleRef, subjects: { list: subject } },
    required: ['metadata', 'roleRef'],
  },
  DaemonSet: {
    apiVersion: 'apps/v1',
    schema: {
      metadata: objectMeta,
      spec: {
        obj: {
          selector: labelSelector,
          minReadySeconds: 'int',
          revisionHistoryLimit: 'int',
          updateStrategy: {
            obj: {
              type: { enum: ['RollingUpdate', 'OnDelete'] },
              rollingUpdate: { obj: { maxUnavailable: 'intOrString', maxSurge: 'intOrString' } },
            },
          },
          template: { obj: { metadata: { obj: { labels: { map: 'string' }, annotations: { map: 'string' } } }, spec: podSpec }, required: ['spec'] },
        },
        required: ['selector', 'template'],
      },
    },
    required: ['metadata', 'spec'],
  },
};

function check(v: unknown, s: S, at: string, errors: string[]): void {
  const err = (m: string): void => void errors.push(`${at}: ${m}`);
  if (s === 'string') {
    if (typeof v !== 'string') err('expected a string');
  } else if (s === 'int') {
    if (!Number.isInteger(v)) err('expected an integer');
  } else if (s === 'bool') {
    if (typeof v !== 'boolean') err('expected a boolean');
  } else if (s === 'intOrString') {
    if (!Number.isInteger(v) && typeof v !== 'string') err('expected an integer or a string');
  } else if (s === 'quantity') {
    if (typeof v !== 'string' || !/^[0-9.]+(m|k|M|G|T|Ki|Mi|Gi|Ti)?$/.test(v)) err(`expected a quantity, got ${JSON.stringify(v)}`);
  } else if ('enum' in s) {
    if (typeof v !== 'string' || !s.enum.includes(v)) err(`expected one of ${s.enum.join('|')}, got ${JSON.stringify(v)}`);
  } else if ('re' in s) {
    if (typeof v !== 'string' || !s.re.test(v)) err(`expected ${s.what}, got ${JSON.stringify(v)}`);
  } else if ('list' in s) {
    if (!Array.isArray(v)) return err('expected a list');
    v.forEach((x, i) => check(x, s.list, `${at}[${i}]`, errors));
  } else if ('map' in s) {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return err('expected a map');
    for (const [k, x] of Object.entries(v)) check(x, s.map, `${at}.${k}`, errors);
  } else {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return err('expected an object');
    for (const [k, x] of Object.entries(v)) {
      if (!(k in s.obj)) err(`unknown field "${k}"`);
      else check(x, s.obj[k], `${at}.${k}`, errors);
    }
    for (const r of s.required ?? []) if (!(r in (v as object))) err(`missing required field "${r}"`);
  }
}

test('the validator itself rejects unknown fields, wrong types and bad names', () => {
  const errors: string[] = [];
  check(
    {
      metadata: { name: 'Bad_Name' },
      spec: { selector: {}, template: { spec: { containers: [{ name: 'c', image: 'i', imagePullPolicy: 'Sometimes', bogus: 1 }] } } },
    },
    { obj: KINDS.DaemonSet.schema },
    'x',
    errors,
  );
  assert.equal(errors.length, 3, errors.join('\n'));
});

// ---------------------------------------------------------------------------------------------
// RBAC against the API calls written in the source (not only the repair controller's table).

interface ApiCall {
  file: string;
  feature: 'plugin' | 'ambient' | 'repair' | 'agent';
  grant: string;
}

/** "group/resource:verb" for a path template (`${...}` parts are names) and an HTTP verb. */
function grantFor(pathTemplate: string, verb: string): string {
  const p = pathTemplate.replace(/\$\{[^}]*\}/g, '{}');
  const rules: [RegExp, (m: RegExpMatchArray) => string][] = [
    [/^\/api\/v1\/namespaces\/\{\}\/(\w+)\/\{\}\/(\w+)$/, (m) => `/${m[1]}/${m[2]}`],
    [/^\/api\/v1\/namespaces\/\{\}\/(\w+)(\/\{\})?$/, (m) => `/${m[1]}`],
    [/^\/api\/v1\/(\w+)(\/\{\})?$/, (m) => `/${m[1]}`],
    [/^\/apis\/([\w.]+)\/v1\/namespaces\/\{\}\/(\w+)\/\{\}$/, (m) => `${m[1]}/${m[2]}`],
  ];
  for (const [re, f] of rules) {
    const m = p.match(re);
    if (m) return `${f(m)}:${verb}`;
  }
  throw new Error(`an API path this test cannot classify: ${pathTemplate}`);
}

const VERB: Record<string, string> = { GET: 'get', POST: 'create', PATCH: 'patch', PUT: 'update', DELETE: 'delete' };

/** Every API call with a literal verb in src/ (the demo's stand-in excluded), by feature. */
function apiCallsInSource(): ApiCall[] {
  const calls: ApiCall[] = [];
  const walk = (dir: string): string[] =>
    fs
      .readdirSync(dir, { withFileTypes: true })
      .flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []));
  for (const file of walk(path.join(PACKAGE_ROOT, 'src'))) {
    const rel = path.relative(PACKAGE_ROOT, file);
    if (rel.startsWith('src/demo/')) continue;
    const text = fs.readFileSync(file, 'utf8');
    const feature: ApiCall['feature'] =
      rel.startsWith('src/agent/ambient/') || rel === 'src/agent/upgrade.ts' || rel === 'src/plugin/ambient.ts'
        ? 'ambient'
        : rel.startsWith('src/agent/repair/')
          ? 'repair'
          : rel.startsWith('src/plugin/') || rel.startsWith('src/kube/')
            ? 'plugin'
            : 'agent';
    const add = (p: string, verb: string) => calls.push({ file: rel, feature, grant: grantFor(p, verb) });
    const literal = (expr: string): string | undefined => {
      if (/^[`'].*[`']$/.test(expr)) return expr.slice(1, -1);
      const m = new RegExp(`const ${expr} = (\`[^\`]*\`|'[^']*')`).exec(text);
      return m ? m[1].slice(1, -1) : undefined;
    };
    for (const m of text.matchAll(/\.request\('(GET|POST|PATCH|PUT|DELETE)',\s*(`[^`]*`|'[^']*'|\w+)/g)) {
      if (m[2] === 'this' && rel === 'src/kube/informer.ts') continue; // generic: its paths are the resourcePath values below
      if (m[2] === 'apiPath' && rel === 'src/agent/upgrade.ts') continue; // generic: its paths are the api.get literals below
      if (m[2] === 'path' && rel === 'src/kube/client.ts') continue; // generic: its two calls are added by caller below
      const p = literal(m[2]);
      assert.ok(p, `${rel}: the path of ${m[0]} is not a literal this test can read`);
      add(p, VERB[m[1]]);
    }
    for (const m of text.matchAll(/\bapi\.get\((`[^`]*`)\)/g)) add(m[1].slice(1, -1), 'get');
    for (const m of text.matchAll(/resourcePath: '([^']+)'/g)) {
      add(m[1], 'list');
      add(m[1], 'watch');
    }
  }
  // The plugin's client (src/kube/client.ts) builds its paths in helpers; its two calls, by caller.
  calls.push({ file: 'src/plugin/istio.ts', feature: 'plugin', grant: '/pods:get' });
  calls.push({ file: 'src/plugin/ambient.ts', feature: 'ambient', grant: '/pods:get' });
  calls.push({ file: 'src/plugin/ambient.ts', feature: 'ambient', grant: '/namespaces:get' });
  return calls;
}

const asGrants = (rules: { apiGroups: string[]; resources: string[]; verbs: string[] }[]) =>
  rules.flatMap((r) => r.apiGroups.flatMap((g) => r.resources.flatMap((res) => r.verbs.map((v) => `${g}/${res}:${v}`))));

for (const profile of PROFILES) {
  const docs = loadManifests(profile);
  const find = (kind: string, name: string) => docs.find((d) => d.kind === kind && d.metadata.name === name);

  test(`${profile}: every manifest object matches its Kubernetes API type (strict)`, () => {
    assert.ok(docs.length >= 7);
    const errors: string[] = [];
    for (const d of docs) {
      const k = KINDS[d.kind];
      if (!k) {
        errors.push(`${d.file}: unsupported kind ${d.kind}`);
        continue;
      }
      if (d.apiVersion !== k.apiVersion) errors.push(`${d.file}: ${d.kind} apiVersion ${d.apiVersion} != ${k.apiVersion}`);
      const { file: _f, kind: _k, apiVersion: _a, ...rest } = d;
      check(rest, { obj: k.schema, required: k.required }, `${d.file}:${d.kind}/${d.metadata?.name}`, errors);
      if (['Role', 'RoleBinding', 'ConfigMap', 'ServiceAccount', 'DaemonSet'].includes(d.kind) && !d.metadata.namespace) {
        errors.push(`${d.file}: namespaced ${d.kind} without a namespace`);
      }
    }
    assert.deepEqual(errors, []);
  });

  test(`${profile}: cross-object references hold: selector, volumes, probe, service account, role bindings`, () => {
    const ds = find('DaemonSet', 'istio-cni-node')!;
    assert.ok(ds, 'DaemonSet istio-cni-node (the name Istio uses, so upgrade detection and drop-in replacement work)');
    const tpl = ds.spec.template;
    for (const [k, v] of Object.entries(ds.spec.selector.matchLabels as Record<string, string>)) assert.equal(tpl.metadata.labels[k], v, `selector ${k}`);
    const spec = tpl.spec;
    assert.equal(spec.hostNetwork, undefined, "not on the host network (the chart's default)");
    const volumes = new Set((spec.volumes as { name: string }[]).map((v) => v.name));
    const c = spec.containers[0];
    const mounts = c.volumeMounts as { name: string; mountPath: string }[];
    for (const m of mounts) assert.ok(volumes.has(m.name), `volume ${m.name} defined`);
    assert.equal(new Set(mounts.map((m) => m.mountPath)).size, mounts.length, 'distinct mount paths');
    assert.equal(c.readinessProbe.httpGet.path, '/readyz');
    assert.equal(c.readinessProbe.httpGet.port, parseAgentConfig({}, deployedEnv()).healthPort, "the probe asks the agent's health port");
    const sa = find('ServiceAccount', spec.serviceAccountName)!;
    assert.ok(sa, 'service account exists');
    assert.equal(sa.metadata.namespace, ds.metadata.namespace);
    for (const b of docs.filter((d) => d.kind.endsWith('Binding'))) {
      assert.ok(find(b.roleRef.kind, b.roleRef.name), `${b.kind} ${b.metadata.name} -> ${b.roleRef.kind} ${b.roleRef.name}`);
      for (const s of b.subjects) assert.ok(find('ServiceAccount', s.name) && s.namespace === sa.metadata.namespace, `subject ${s.name}`);
    }
    // The DaemonSet mounts exactly where the agent's defaults look.
    const defaults = parseAgentConfig({}, {}).install;
    const paths = mounts.map((m) => m.mountPath);
    for (const p of [defaults.mountedCNINetDir, defaults.cniBinTargetDirs[0], defaults.cniAgentRunDir]) assert.ok(paths.includes(p), `mount for ${p}`);
  });

  /** The agent's configuration as deployed: the ConfigMap, then the DaemonSet's own env. */
  function deployedEnv(): Record<string, string> {
    const cm = find('ConfigMap', 'istio-cni-config')!;
    const c = find('DaemonSet', 'istio-cni-node')!.spec.template.spec.containers[0];
    const env: Record<string, string> = { ...cm.data };
    for (const e of c.env as { name: string; value?: string }[]) env[e.name] = e.value ?? 'from-downward-api';
    return env;
  }

  /** "resource:verb" pairs a rule grants (core group only: all the repair controller uses). */
  const grantsOf = (rules: { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] }[]) =>
    new Set(rules.filter((r) => r.apiGroups.includes('') && !r.resourceNames).flatMap((r) => r.resources.flatMap((res) => r.verbs.map((v) => `${res}:${v}`))));

  test(`${profile}: least privilege: read-only access except what the configured repair action and ambient enrollment write; no secrets, no wildcard`, () => {
    const cfg = parseAgentConfig({}, deployedEnv());
    const writes = grantsOf([
      ...(cfg.repair.enabled ? repairApiRules(cfg.repair) : []),
      ...(cfg.ambient.enabled ? [{ apiGroups: [''], resources: ['pods/status'], verbs: ['patch'] }] : []),
    ]);
    for (const r of docs.filter((d) => d.kind === 'ClusterRole' || d.kind === 'Role')) {
      for (const rule of r.rules) {
        assert.ok(!rule.verbs.includes('*') && !rule.resources.includes('*') && !rule.apiGroups.includes('*'), `${r.kind} ${r.metadata.name}: no wildcard`);
        for (const v of rule.verbs as string[]) {
          if (['get', 'list', 'watch'].includes(v)) continue;
          for (const res of rule.resources as string[]) {
            assert.ok(
              rule.apiGroups.includes('') && writes.has(`${res}:${v}`),
              `${r.kind} ${r.metadata.name}: ${res}:${v} is not a call the configured repair action makes`,
            );
          }
        }
        assert.ok(!rule.resources.includes('secrets'), 'no secrets');
      }
    }
  });

  test(`${profile}: RBAC matches the repair controller: every call of the configured action is granted cluster-wide, no right of another action is`, () => {
    const cfg = parseAgentConfig({}, deployedEnv());
    assert.equal(cfg.repair.enabled, true, 'the manifests deploy the repair controller');
    const sa = find('DaemonSet', 'istio-cni-node')!.spec.template.spec.serviceAccountName;
    // Pods on this node are in every namespace: only ClusterRoles bound by ClusterRoleBindings count.
    const bound = docs
      .filter((d) => d.kind === 'ClusterRoleBinding' && d.subjects.some((s: { name: string }) => s.name === sa))
      .map((b) => find('ClusterRole', b.roleRef.name)!);
    const granted = grantsOf(bound.flatMap((r) => r.rules));
    const need = grantsOf(repairApiRules(cfg.repair));
    for (const n of need) assert.ok(granted.has(n), `the ${repairAction(cfg.repair)} action needs ${n}`);
    // The rights any action could need, and which this action does not: none may be granted.
    const every = new Set(
      [true, false].flatMap((repairPods) =>
        [true, false].flatMap((deletePods) => [true, false].flatMap((labelPods) => [...grantsOf(repairApiRules({ repairPods, deletePods, labelPods }))])),
      ),
    );
    const all = grantsOf(docs.filter((d) => d.kind === 'ClusterRole' || d.kind === 'Role').flatMap((r) => r.rules));
    for (const g of every) {
      if (need.has(g)) continue;
      // Ambient enrollment's own calls (the redirection annotation is a pods/status patch).
      if (cfg.ambient.enabled && apiCallsInSource().some((c) => c.feature === 'ambient' && c.grant === `/${g}`)) continue;
      assert.ok(!all.has(g), `${g} is granted but the ${repairAction(cfg.repair)} action does not use it`);
    }
  });

  test(`${profile}: repair mode in the DaemonSet: the node procfs at REPAIR_HOST_PROC_DIR, read-only; the capabilities to enter netns; the node name`, () => {
    const cfg = parseAgentConfig({}, deployedEnv());
    const spec = find('DaemonSet', 'istio-cni-node')!.spec.template.spec;
    const c = spec.containers[0];
    if (!cfg.repair.enabled || repairAction(cfg.repair) !== 'repair') return; // only repair mode needs these
    const mount = (c.volumeMounts as { name: string; mountPath: string; readOnly?: boolean }[]).find((m) => m.mountPath === cfg.repair.hostProcDir);
    assert.ok(mount, `a mount at ${cfg.repair.hostProcDir}`);
    assert.equal(mount.readOnly, true);
    const vol = (spec.volumes as { name: string; hostPath?: { path: string } }[]).find((v) => v.name === mount.name)!;
    assert.equal(vol.hostPath?.path, '/proc');
    for (const cap of ['SYS_ADMIN', 'NET_ADMIN', 'SYS_PTRACE']) assert.ok(c.securityContext.capabilities.add.includes(cap), cap);
    assert.equal(c.securityContext.privileged, false);
    const nodeVar = (c.env as { name: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[]).find((e) => e.name === 'REPAIR_NODE_NAME');
    assert.equal(nodeVar?.valueFrom?.fieldRef?.fieldPath, 'spec.nodeName');
  });

  test(`${profile}: the agent starts with the ConfigMap and DaemonSet environment (every variable known and well-formed)`, () => {
    const cm = find('ConfigMap', 'istio-cni-config')!;
    const ds = find('DaemonSet', 'istio-cni-node')!;
    const c = ds.spec.template.spec.containers[0];
    assert.equal(c.envFrom[0].configMapRef.name, cm.metadata.name);
    const known = new Set([...PARAMS.map((p) => p.env), 'POD_NAME', 'NODE_NAME', 'KUBERNETES_NODE_NAME']);
    const env: Record<string, string> = { ...cm.data };
    for (const e of c.env as { name: string; value?: string }[]) env[e.name] = e.value ?? 'from-downward-api';
    for (const k of Object.keys(env)) assert.ok(known.has(k), `${k} is a variable the agent reads`);
    const cfg = parseAgentConfig({}, env);
    assert.equal(cfg.monitoringPort, (c.ports as { name: string; containerPort: number }[]).find((p) => p.name === 'metrics')!.containerPort);
    assert.equal(cfg.ambient.enabled, profile === 'ambient');
    assert.equal(cfg.hostSide.allowSwitch, true, "host-side work through the node's netns");
  });

  /** "group/resource:verb" for every rule of the roles bound to the agent's service account. */
  function boundGrants(): Set<string> {
    const sa = find('DaemonSet', 'istio-cni-node')!.spec.template.spec.serviceAccountName;
    const roles = docs
      .filter((d) => (d.kind === 'ClusterRoleBinding' || d.kind === 'RoleBinding') && d.subjects.some((s: { name: string }) => s.name === sa))
      .map((b) => find(b.roleRef.kind, b.roleRef.name)!);
    return new Set(
      roles
        .flatMap((r) => r.rules as { apiGroups: string[]; resources: string[]; verbs: string[] }[])
        .flatMap((r) => r.apiGroups.flatMap((g) => r.resources.flatMap((res) => r.verbs.map((v) => `${g}/${res}:${v}`)))),
    );
  }

  test(`${profile}: RBAC vs the API calls in the source: every call of the deployed configuration is granted, every grant has a caller`, (t) => {
    const calls = apiCallsInSource();
    const cfg = parseAgentConfig({}, deployedEnv());
    const granted = boundGrants();
    // The repair controller's verb depends on its action: its own table says which (tested above);
    // the literal calls found in its file must all be in some action's table.
    const anyRepair = new Set(
      [true, false].flatMap((repairPods) =>
        [true, false].flatMap((deletePods) => [true, false].flatMap((labelPods) => asGrants(repairApiRules({ repairPods, deletePods, labelPods })))),
      ),
    );
    for (const c of calls.filter((x) => x.feature === 'repair')) assert.ok(anyRepair.has(c.grant), `${c.file}: ${c.grant} is in repairApiRules`);
    const needed = new Set<string>([
      ...calls.filter((c) => c.feature === 'plugin' || c.feature === 'agent' || (c.feature === 'ambient' && cfg.ambient.enabled)).map((c) => c.grant),
      ...(cfg.repair.enabled ? asGrants(repairApiRules(cfg.repair)) : []),
    ]);
    for (const n of needed)
      assert.ok(
        granted.has(n),
        `the deployed configuration calls ${n} (${calls
          .filter((c) => c.grant === n)
          .map((c) => c.file)
          .join(', ')}) but RBAC does not grant it`,
      );
    const called = new Set(calls.map((c) => c.grant));
    for (const g of granted) assert.ok(called.has(g), `${g} is granted but no code calls it`);
    const ambientOnly = [...granted].filter((g) => !needed.has(g));
    const ambientMissing = [...new Set(calls.filter((c) => c.feature === 'ambient').map((c) => c.grant))].filter((g) => !granted.has(g));
    t.diagnostic(
      `${calls.length} API call sites in src/ (${called.size} distinct grants); deployed configuration needs ${needed.size}: ${[...needed].sort().join(', ')}`,
    );
    t.diagnostic(
      `granted but only used with AMBIENT_ENABLED=true: ${ambientOnly.sort().join(', ') || 'none'}; ambient calls not granted: ${ambientMissing.join(', ') || 'none'}`,
    );
  });
}

test('ambient adds to the sidecar rendering only rights that ambient code uses, and every ambient call is granted', () => {
  const bound = (p: Profile) => {
    const docs = loadManifests(p);
    const sa = docs.find((d) => d.kind === 'DaemonSet')!.spec.template.spec.serviceAccountName;
    return new Set(
      docs
        .filter((d) => d.kind === 'ClusterRoleBinding' && d.subjects.some((x: { name: string }) => x.name === sa))
        .flatMap((b) => asGrants(docs.find((r) => r.kind === 'ClusterRole' && r.metadata.name === b.roleRef.name)!.rules)),
    );
  };
  const sidecar = bound('sidecar');
  const ambient = bound('ambient');
  const added = [...ambient].filter((g) => !sidecar.has(g));
  assert.ok(added.length > 0);
  const ambientCalls = apiCallsInSource().filter((x) => x.feature === 'ambient');
  for (const c of ambientCalls) assert.ok(ambient.has(c.grant), `${c.file}: ${c.grant} is not granted`);
  for (const g of added)
    assert.ok(
      ambientCalls.some((c) => c.grant === g),
      `the ambient rendering adds ${g}, which no ambient code calls`,
    );
});
