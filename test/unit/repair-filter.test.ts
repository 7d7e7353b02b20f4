// The repair controller's pod filter, case by case (the matrix Istio's repair tests cover, with
// our own pods), the field selector, the action precedence and the RBAC each action needs.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { FilterSettings, matchesFilter, repairFieldSelector } from '../../src/agent/repair/filter';
import { Pod } from '../../src/kube/pod';
import { repairAction, repairApiRules } from '../../src/agent/repair/controller';
import { brokenTerminated, brokenWaiting, healthy, recovered, repairPod } from '../support/kube-api';

const defaults: FilterSettings = {
  sidecarAnnotation: 'sidecar.istio.io/status',
  initContainerName: 'istio-validation',
  initTerminationMsg: '',
  initExitCode: 126,
};

const withLast = (message: string, exitCode: number) => ({
  name: 'istio-validation',
  state: { waiting: { reason: 'CrashLoopBackOff' } },
  lastState: { terminated: { exitCode, message, reason: 'Error' } },
});

const cases: [string, Partial<FilterSettings>, Pod, boolean][] = [
  ['validation passed', {}, repairPod({ name: 'ok', initStatus: healthy }), false],
  ['failed before, passed now', {}, repairPod({ name: 'recovered', initStatus: recovered }), false],
  ['crash-looping (waiting), exit 126', {}, repairPod({ name: 'w', initStatus: brokenWaiting }), true],
  ['failed again (terminated 126), exit 126 before', {}, repairPod({ name: 't', initStatus: brokenTerminated }), true],
  ['exit code not the configured one', { initExitCode: 55 }, repairPod({ name: 'w', initStatus: brokenWaiting }), false],
  ['exit code 0 configured = any code', { initExitCode: 0 }, repairPod({ name: 'w', initStatus: withLast('x', 3) }), true],
  ['no sidecar annotation', {}, repairPod({ name: 'n', annotations: null, initStatus: brokenWaiting }), false],
  ['no annotation required', { sidecarAnnotation: '' }, repairPod({ name: 'n', annotations: null, initStatus: brokenWaiting }), true],
  [
    'termination message differs',
    { initTerminationMsg: 'Termination Message', initExitCode: 0 },
    repairPod({ name: 'm', initStatus: withLast('Something else', 0) }),
    false,
  ],
  [
    'termination message matches',
    { initTerminationMsg: 'Termination Message', initExitCode: 0 },
    repairPod({ name: 'm', initStatus: withLast('Termination Message', 0) }),
    true,
  ],
  [
    'termination message matches once trimmed',
    { initTerminationMsg: '   Termination Message', initExitCode: 0 },
    repairPod({ name: 'm', initStatus: withLast('Termination Message    ', 0) }),
    true,
  ],
  ['exit code 121 vs 126', {}, repairPod({ name: 'c', initStatus: withLast('', 121) }), false],
  ['exit code 126 vs 126', {}, repairPod({ name: 'c', initStatus: withLast('', 126) }), true],
  ['an empty container status', {}, repairPod({ name: 'e', initStatus: {} }), false],
  ['another init container failing', {}, repairPod({ name: 'o', initStatus: { ...brokenWaiting, name: 'other-init' } }), false],
  ['any init container when no name is set', { initContainerName: '' }, repairPod({ name: 'o', initStatus: { ...brokenWaiting, name: 'other-init' } }), true],
  ['no status at all', {}, { metadata: { name: 'x', annotations: { 'sidecar.istio.io/status': '' } } }, false],
  [
    'terminated non-zero now but no previous run',
    {},
    repairPod({ name: 'first', initStatus: { name: 'istio-validation', state: brokenTerminated.state } }),
    false,
  ],
];

for (const [name, over, pod, want] of cases) {
  test(`matchesFilter: ${name} -> ${want}`, () => {
    assert.equal(matchesFilter(pod, { ...defaults, ...over }), want);
  });
}

test('field selector: spec.nodeName always, after the extra selectors (even with no node, as upstream)', () => {
  assert.equal(repairFieldSelector('', 'node-a'), 'spec.nodeName=node-a');
  assert.equal(repairFieldSelector('metadata.namespace!=kube-system', 'node-a'), 'metadata.namespace!=kube-system,spec.nodeName=node-a');
  assert.equal(repairFieldSelector('', ''), 'spec.nodeName=');
});

test('action precedence: repair > delete > label > none', () => {
  assert.equal(repairAction({ repairPods: true, deletePods: true, labelPods: true }), 'repair');
  assert.equal(repairAction({ repairPods: false, deletePods: true, labelPods: true }), 'delete');
  assert.equal(repairAction({ repairPods: false, deletePods: false, labelPods: true }), 'label');
  assert.equal(repairAction({ repairPods: false, deletePods: false, labelPods: false }), 'none');
});

test('API rights per action: watch pods always; delete or status patch (+ events) only for that action', () => {
  const verbsOf = (s: Parameters<typeof repairApiRules>[0]) =>
    repairApiRules(s)
      .flatMap((r) => r.resources.flatMap((res) => r.verbs.map((v) => `${res}:${v}`)))
      .sort();
  assert.deepEqual(verbsOf({ repairPods: true, deletePods: true, labelPods: true }), ['pods:list', 'pods:watch']);
  assert.deepEqual(verbsOf({ repairPods: false, deletePods: true, labelPods: true }), ['events:create', 'pods:delete', 'pods:list', 'pods:watch']);
  assert.deepEqual(verbsOf({ repairPods: false, deletePods: false, labelPods: true }), ['events:create', 'pods/status:patch', 'pods:list', 'pods:watch']);
  assert.deepEqual(verbsOf({ repairPods: false, deletePods: false, labelPods: false }), ['pods:list', 'pods:watch']);
});
