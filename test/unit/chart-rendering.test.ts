// install/kubernetes/{sidecar,ambient}/ against Istio's istio-cni chart at 1.28.1, point by point
// (the facts in istio-cni-chart-1.28.1.ts): objects, labels, the DaemonSet's pod spec (env names
// and sources, mounts and propagation, volumes, capabilities, security context, probes, ports,
// command and args, annotations, tolerations, priority class), the ConfigMap's keys and values,
// RBAC. Any divergence fails; the only allowed ones are our image and the RBAC rights listed in
// NARROWER (each one a right no code of ours uses; manifests.test.ts proves every call is granted).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as YAML from 'yaml';
import { parseAgentConfig } from '../../src/agent/config';
import { PACKAGE_ROOT } from '../support/conformance';
import { ManifestDoc, loadManifests } from '../support/manifests';
import { CHART, EnvFact, Profile, RuleFact } from './istio-cni-chart-1.28.1';

/** The image our manifests deploy (the chart's `image` value when installing with Helm). */
export const OUR_IMAGE = 'localhost/istio-cni-ts:0.1.0';

/** Rights the chart grants that ours leave out, by ClusterRole, and why. */
const NARROWER: Record<string, Record<string, string>> = {
  'istio-cni': {
    '/nodes:list': 'nothing lists nodes (the upgrade check GETs its own node)',
    '/nodes:watch': 'nothing watches nodes',
  },
  'istio-cni-repair-role': {
    '/events:create': "the chart's repair action (REPAIR_REPAIR_PODS) records no events; the delete and label actions need it",
    '/events:patch': 'no event is ever patched',
  },
  'istio-cni-ambient': {
    '/pods/status:update': 'the enrollment annotation is a merge PATCH; nothing PUTs pods/status',
  },
};

const grants = (rules: RuleFact[]): Set<string> =>
  new Set(
    rules.flatMap((r) =>
      r.apiGroups.flatMap((g) => r.resources.flatMap((res) => r.verbs.map((v) => `${g}/${res}:${v}${r.resourceNames ? `@${r.resourceNames.join(',')}` : ''}`))),
    ),
  );

const envFact = (e: EnvFact) =>
  e.value !== undefined
    ? { name: e.name, value: e.value }
    : e.field
      ? { name: e.name, valueFrom: { fieldRef: e.field } }
      : { name: e.name, valueFrom: { resourceFieldRef: e.resource } };

const strip = <T extends { profiles?: Profile[] }>(xs: readonly T[], p: Profile) =>
  xs
    .filter((x) => !x.profiles || x.profiles.includes(p))
    .map((x) => {
      const rest: Partial<T> = { ...x };
      delete rest.profiles;
      return rest;
    });

for (const p of ['sidecar', 'ambient'] as Profile[]) {
  const docs = loadManifests(p);
  const one = (kind: string, name: string): ManifestDoc => {
    const found = docs.filter((d) => d.kind === kind && d.metadata.name === name);
    assert.equal(found.length, 1, `${p}: one ${kind} ${name}`);
    return found[0];
  };

  test(`${p}: the chart's objects, no more, with its names, namespace and labels`, () => {
    const want = [
      `ServiceAccount/${CHART.serviceAccount}`,
      `ConfigMap/${CHART.configMap}`,
      `DaemonSet/${CHART.daemonSet}`,
      ...Object.keys(CHART.clusterRoles(p)).map((n) => `ClusterRole/${n}`),
      ...Object.keys(CHART.clusterRoleBindings(p)).map((n) => `ClusterRoleBinding/${n}`),
    ].sort();
    assert.deepEqual(docs.map((d) => `${d.kind}/${d.metadata.name}`).sort(), want);
    for (const d of docs) {
      const namespaced = ['ServiceAccount', 'ConfigMap', 'DaemonSet'].includes(d.kind);
      assert.equal(d.metadata.namespace, namespaced ? CHART.namespace : undefined, `${d.kind}/${d.metadata.name} namespace`);
      const own = d.kind === 'DaemonSet' ? CHART.daemonSetLabels : d.kind === 'ClusterRoleBinding' ? CHART.bindingLabel(d.metadata.name) : { app: 'istio-cni' };
      assert.deepEqual(d.metadata.labels, { ...own, ...CHART.commonLabels }, `${d.kind}/${d.metadata.name} labels`);
    }
  });

  test(`${p}: the DaemonSet's pod spec is the chart's (not on the host network; tolerations, priority, grace period, annotations)`, () => {
    const ds = one('DaemonSet', CHART.daemonSet);
    assert.deepEqual(ds.spec.selector, CHART.selector);
    assert.deepEqual(ds.spec.updateStrategy, CHART.updateStrategy);
    const t = ds.spec.template;
    assert.deepEqual(t.metadata.labels, CHART.podLabels);
    assert.deepEqual(t.metadata.annotations, CHART.podAnnotations);
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the rendered pod spec, compared field by field below
    const { containers, volumes, ...spec } = t.spec as Record<string, any>;
    assert.equal(spec.hostNetwork ?? false, CHART.hostNetwork, 'the chart leaves the host network to ambient.shareHostNetworkNamespace');
    assert.deepEqual(
      spec,
      {
        nodeSelector: CHART.nodeSelector,
        tolerations: CHART.tolerations,
        priorityClassName: CHART.priorityClassName,
        serviceAccountName: CHART.serviceAccount,
        terminationGracePeriodSeconds: CHART.terminationGracePeriodSeconds,
      },
      'pod-level fields (no hostNetwork, no dnsPolicy, nothing else)',
    );
    assert.deepEqual(volumes, strip(CHART.volumes, p), 'volumes (host paths, types, order)');
    assert.equal(containers.length, 1);
  });

  test(`${p}: the container: command and args, env names and sources (downward API), mounts and propagation, capabilities, security context, probe, ports, resources`, () => {
    const c = one('DaemonSet', CHART.daemonSet).spec.template.spec.containers[0];
    const { image, ...rest } = c;
    assert.equal(image, OUR_IMAGE, 'our image (the one allowed difference)');
    const f = CHART.container;
    assert.deepEqual(rest, {
      name: f.name,
      ports: f.ports,
      readinessProbe: f.readinessProbe,
      securityContext: f.securityContext,
      command: f.command,
      args: f.args,
      envFrom: f.envFrom,
      env: f.env.map(envFact),
      volumeMounts: strip(CHART.mounts, p),
      resources: f.resources,
    });
    assert.equal(c.livenessProbe, f.livenessProbe, 'no liveness probe');
    assert.ok(
      f.env.some((e) => e.name === 'ALLOW_SWITCH_TO_HOST_NS' && e.value === 'true'),
      'host-side work through /host/proc/1/ns/net',
    );
  });

  test(`${p}: the ConfigMap has the chart's keys and defaults`, () => {
    const cm = one('ConfigMap', CHART.configMap);
    const tag = OUR_IMAGE.slice(OUR_IMAGE.lastIndexOf(':') + 1);
    const { AMBIENT_ENABLEMENT_SELECTOR: sel, ...data } = cm.data as Record<string, string>;
    const want: Record<string, string> = CHART.configData(p, tag);
    delete want.AMBIENT_ENABLEMENT_SELECTOR;
    assert.deepEqual(data, want);
    assert.deepEqual(YAML.parse(sel), CHART.enablementSelectors, 'enablement selectors (parsed)');
    // The agent reads the same selectors from it.
    assert.equal(parseAgentConfig({}, { AMBIENT_ENABLEMENT_SELECTOR: sel }).ambient.enablementSelectors.length, 2);
  });

  test(`${p}: RBAC is the chart's, narrower only by the rights NARROWER lists`, () => {
    for (const [name, chartRules] of Object.entries(CHART.clusterRoles(p))) {
      const ours = grants(one('ClusterRole', name).rules);
      const theirs = grants(chartRules);
      for (const g of ours) assert.ok(theirs.has(g), `${name}: ${g} is not granted by the chart`);
      const left = [...theirs].filter((g) => !ours.has(g)).sort();
      assert.deepEqual(left, Object.keys(NARROWER[name] ?? {}).sort(), `${name}: rights left out must be exactly those NARROWER explains`);
    }
    for (const [name, role] of Object.entries(CHART.clusterRoleBindings(p))) {
      const b = one('ClusterRoleBinding', name);
      assert.deepEqual(b.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role });
      assert.deepEqual(b.subjects, [{ kind: 'ServiceAccount', name: CHART.serviceAccount, namespace: CHART.namespace }]);
    }
  });
}

test('sidecar and ambient differ exactly where the chart makes ambient.enabled matter', () => {
  const strip2 = (docs: ManifestDoc[]) => docs.filter((d) => !d.metadata.name.includes('ambient'));
  const [s, a] = (['sidecar', 'ambient'] as Profile[]).map((p) => loadManifests(p));
  const ds = (d: ManifestDoc[]) => d.find((x) => x.kind === 'DaemonSet')!.spec.template.spec;
  assert.deepEqual(
    ds(a)
      .volumes.filter((v: { name: string }) => !ds(s).volumes.some((w: { name: string }) => w.name === v.name))
      .map((v: { name: string }) => v.name),
    ['cni-ztunnel-sock-dir'],
  );
  assert.deepEqual(
    ds(a)
      .containers[0].volumeMounts.slice(ds(s).containers[0].volumeMounts.length)
      .map((m: { mountPath: string }) => m.mountPath),
    ['/host/var/run/netns', '/var/run/ztunnel'],
  );
  assert.equal(strip2(a).length, s.length, 'ambient adds one ClusterRole and its binding');
});

test("the chart's command is one of our executables and takes the chart's args", () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> };
  const [cmd] = CHART.container.command;
  assert.ok(pkg.bin[cmd], `package.json bin has ${cmd}`);
  // Flags are checked first; start-up then stops at the missing API address (exit 2, no side effect).
  const run = (...args: string[]) =>
    spawnSync(process.execPath, [path.join(PACKAGE_ROOT, pkg.bin[cmd]), ...args], { encoding: 'utf8', env: { PATH: process.env.PATH }, timeout: 20_000 });
  const ok = run(...CHART.container.args, '--log_as_json');
  assert.doesNotMatch(ok.stderr, /Unknown argument/, ok.stderr);
  assert.match(ok.stderr, /KUBERNETES_SERVICE_HOST/, 'got past flag parsing');
  const bad = run('--no_such_flag');
  assert.match(bad.stderr, /Unknown argument: no_such_flag/, 'the check above would notice a refused flag');
  assert.equal(bad.status, 2);
});
