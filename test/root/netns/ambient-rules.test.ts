// Every ambient transaction the builders make is accepted by the real kernel through the addon:
// the in-pod rules in a fresh pod netns (each conformance case and a matrix of settings), the
// host rule with its probe sets, and the set element operations, with the state checked after.
import { NftJsonRuleset } from '../../../src/nft/json';
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { buildHostRules, buildHostSetup, buildInpodRules, deleteHostRules, deleteInpodRules } from '../../../src/ambient/build';
import { parseAmbientConfig, parseHostRuleParams, parsePodOverrides } from '../../../src/ambient/config';
import { addProbeAddress, createProbeSets, deleteProbeAddress, destroyProbeSets, flushProbeSets } from '../../../src/ambient/probe-sets';
import { NAT, POD_TABLES } from '../../../src/ambient/tables';
import { parseIp } from '../../../src/net/ip';
import { Transaction, render } from '../../../src/nft/transaction';
import { NftError, applyNft, applyTransaction, listRulesetJson } from '../../../src/netns/nft';
import { parsePodUid } from '../../../src/values/typed';
import { loadSuite } from '../../support/conformance';
import { Netns, expectedShape, makeNetns, removeAllNetns, requireRootAndTools, shapeOfJson, threadNetns } from './addon-support';

let ns: Netns;
let selfNetns: string;
before(() => {
  requireRootAndTools();
  ns = makeNetns();
  selfNetns = threadNetns().process;
});
after(() => {
  removeAllNetns();
  assert.equal(threadNetns().process, selfNetns, 'the test process stays in its own netns');
});

const podReplace = POD_TABLES.map((t) => ({ family: t.family, table: t.name }));
const isEmpty = (json: NftJsonRuleset) => json.nftables.every((i) => i.metainfo);
const applyText = (tx: Transaction) => applyNft(ns.path, render(tx));

async function applyPod(tx: Transaction): Promise<void> {
  await applyTransaction(ns.path, tx, { replace: podReplace });
  const shape = shapeOfJson(await listRulesetJson(ns.path));
  assert.deepEqual(shape, expectedShape(tx));
  // Applied again it leaves the same state (Istio re-applies on reconcile).
  await applyTransaction(ns.path, tx, { replace: podReplace });
  assert.deepEqual(shapeOfJson(await listRulesetJson(ns.path)), shape);
}

async function removePod(): Promise<void> {
  await applyText(deleteInpodRules());
  assert.ok(isEmpty(await listRulesetJson(ns.path)), 'no table left');
  await applyText(deleteInpodRules()); // nothing to remove is no error
}

const podCases = loadSuite('ambient').filter((c) => c.input.ruleSet === 'pod');

test('the ambient conformance suite is there', () => {
  assert.equal(podCases.length, 12, 'set ISTIO_CONFORMANCE_DIR');
});

for (const c of podCases) {
  test(`ambient/${c.case}: the kernel takes the in-pod transaction, twice, and the delete`, async () => {
    await applyPod(buildInpodRules(parseAmbientConfig(c.input.ambientConfig), parsePodOverrides(c.input.podOverrides)));
    await removePod();
  });
}

test('in-pod matrix: IPv6 x node DNS x pod DNS x ingress x virtual interfaces, all accepted', async () => {
  let n = 0;
  for (const enableIPv6 of [false, true]) {
    for (const redirectDNS of [false, true]) {
      const cfg = parseAmbientConfig({ enableIPv6, redirectDNS });
      for (const dnsProxy of ['PodDNSUnset', 'PodDNSEnabled', 'PodDNSDisabled']) {
        for (const ingressMode of [false, true]) {
          for (const virtualInterfaces of [[], ['net1', 'tap0.5', 'br_x-1']]) {
            const tx = buildInpodRules(cfg, parsePodOverrides({ dnsProxy, ingressMode, virtualInterfaces }));
            await applyPod(tx);
            const text = JSON.stringify(await listRulesetJson(ns.path));
            assert.equal(/"ip6"/.test(text), enableIPv6, `ip6 matches only with IPv6 on (${enableIPv6})`);
            n++;
          }
        }
      }
    }
  }
  await removePod();
  assert.equal(n, 48);
});

// ---- host side: sets, rule, elements --------------------------------------------------------

const u1 = parsePodUid('test', '5f0c2a1e-8d7b-4c3a-9e21-0a1b2c3d4e5f');
const u2 = parsePodUid('test', 'b3a9c1d2-0000-4000-8000-000000000002');
const ip = (s: string) => parseIp(s)!;

interface SetState {
  type: string | string[];
  comment?: string;
  elements: Array<{ key: string; comment?: string }>;
}

async function hostState(): Promise<{ sets: Map<string, SetState>; rules: string[] }> {
  const json = await listRulesetJson(ns.path);
  const sets = new Map<string, SetState>();
  const rules: string[] = [];
  for (const item of json.nftables) {
    if (item.set && item.set.table === NAT) {
      const elements = (item.set.elem ?? []).map((e) =>
        typeof e === 'object' ? { key: String(e.elem.val), ...(e.elem.comment ? { comment: e.elem.comment } : {}) } : { key: String(e) },
      );
      sets.set(item.set.name, { type: item.set.type, comment: item.set.comment, elements });
    }
    if (item.rule && item.rule.table === NAT) rules.push(item.rule.chain);
  }
  return { sets, rules };
}

for (const enableIPv6 of [false, true]) {
  test(`host (IPv6 ${enableIPv6 ? 'on' : 'off'}): sets and rule in one replacing transaction, as applyTransaction does it`, async () => {
    const cfg = parseAmbientConfig({ enableIPv6 });
    const host = parseHostRuleParams({ kubeletUID: '0' });
    const tx = buildHostSetup(cfg, host);
    await applyTransaction(ns.path, tx);
    const s = await hostState();
    assert.deepEqual([...s.sets.keys()].sort(), enableIPv6 ? ['istio-inpod-probes-v4', 'istio-inpod-probes-v6'] : ['istio-inpod-probes-v4']);
    assert.equal(s.sets.get('istio-inpod-probes-v4')!.comment, 'UUID of the pods that are part of ambient mesh');
    assert.deepEqual(s.rules, enableIPv6 ? ['postrouting', 'postrouting'] : ['postrouting']);
    // The host rule alone, without sets, is refused by the kernel.
    await applyText(destroyProbeSets());
    await assert.rejects(applyText(buildHostRules(cfg, host)), (e: unknown) => e instanceof NftError && /istio-inpod-probes-v4/.test(e.stderr + e.message));
    await applyText(destroyProbeSets());
  });
}

test('host, as the agent runs it: sets first, elements with pod UIDs, rule applied in place keeps them', async () => {
  const cfg = parseAmbientConfig({ enableIPv6: true });
  const sets = { prefix: parseHostRuleParams({ kubeletUID: '0' }).probeIPSetName, ipv6: true };
  await applyText(createProbeSets(sets));
  await applyText([
    ...addProbeAddress(sets, ip('10.244.1.7'), u1),
    ...addProbeAddress(sets, ip('fd00:244::7'), u1),
    ...addProbeAddress(sets, ip('::ffff:10.244.1.8'), u2),
  ]);
  // Re-creating the sets at start keeps their elements.
  await applyText(createProbeSets(sets));
  await applyText(buildHostRules(cfg, parseHostRuleParams({ kubeletUID: '1000' })));
  let s = await hostState();
  assert.deepEqual(
    s.sets.get('istio-inpod-probes-v4')!.elements.sort((a, b) => a.key.localeCompare(b.key)),
    [
      { key: '10.244.1.7', comment: u1 },
      { key: '10.244.1.8', comment: u2 },
    ],
  );
  assert.deepEqual(s.sets.get('istio-inpod-probes-v6')!.elements, [{ key: 'fd00:244::7', comment: u1 }]);
  assert.equal(s.rules.length, 2);

  // Applying the host rule again (flush table) keeps the elements, and does not duplicate the rule.
  await applyText(buildHostRules(cfg, parseHostRuleParams({ kubeletUID: '1000' })));
  s = await hostState();
  assert.equal(s.rules.length, 2);
  assert.equal(s.sets.get('istio-inpod-probes-v4')!.elements.length, 2);

  // Adding an address that is there under another UID keeps the old comment (kernel behaviour).
  await applyText(addProbeAddress(sets, ip('10.244.1.7'), u2));
  s = await hostState();
  assert.equal(s.sets.get('istio-inpod-probes-v4')!.elements.find((e) => e.key === '10.244.1.7')!.comment, u1);

  // Removing the host rule leaves the sets and their elements.
  await applyText(deleteHostRules());
  s = await hostState();
  assert.equal(s.rules.length, 0);
  assert.equal(s.sets.get('istio-inpod-probes-v4')!.elements.length, 2);

  // Element delete; deleting an absent one is refused by the kernel.
  await applyText(deleteProbeAddress(sets, ip('10.244.1.7')));
  await assert.rejects(applyText(deleteProbeAddress(sets, ip('10.244.1.7'))), NftError);
  s = await hostState();
  assert.deepEqual(s.sets.get('istio-inpod-probes-v4')!.elements, [{ key: '10.244.1.8', comment: u2 }]);

  await applyText(flushProbeSets(sets));
  s = await hostState();
  assert.equal(s.sets.get('istio-inpod-probes-v4')!.elements.length, 0);
  assert.equal(s.sets.get('istio-inpod-probes-v6')!.elements.length, 0);

  await applyText(destroyProbeSets());
  await applyText(destroyProbeSets());
  assert.ok(isEmpty(await listRulesetJson(ns.path)));
});

test('IPv4-only host: no -v6 set, and IPv6 addresses are skipped, not refused', async () => {
  const sets = { prefix: parseHostRuleParams({ kubeletUID: '0' }).probeIPSetName, ipv6: false };
  await applyText(buildHostSetup(parseAmbientConfig({}), parseHostRuleParams({ kubeletUID: '0' })));
  assert.deepEqual(addProbeAddress(sets, ip('fd00::1'), u1), []);
  const s = await hostState();
  assert.deepEqual([...s.sets.keys()], ['istio-inpod-probes-v4']);
  assert.ok(!JSON.stringify(await listRulesetJson(ns.path)).includes('ip6'));
  await applyText(destroyProbeSets());
});
