// Finding a pod's netns in a fake /proc: ns/net entries are plain files (processes sharing a
// netns are hard links to one file, so they share an inode, as on nsfs), whose text is the
// addresses the fake probe reports for that netns. The real-kernel version is in
// test/root/netns/repair-netns.test.ts.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { findPodNetns } from '../../src/agent/repair/netns';
import { parseStartTime, podFromCgroups } from '../../src/agent/pod-netns';
import { podIPs } from '../../src/kube/pod';
import { formatIp } from '../../src/net/ip';
import { repairPod } from '../support/kube-api';
import { tempDir } from '../support/tmp';

const UID = '2c48913c-b29f-11e7-9350-020968147796';

class FakeProc {
  readonly root = tempDir(path.join(os.tmpdir(), 'icts-proc-'));
  readonly probed: string[] = [];

  /** A process; `sameNetnsAs` makes it share another pid's netns. */
  proc(pid: number, o: { start: number; addrs?: string[]; sameNetnsAs?: number; cgroup?: string; comm?: string }): void {
    const dir = path.join(this.root, String(pid));
    fs.mkdirSync(path.join(dir, 'ns'), { recursive: true });
    const ns = path.join(dir, 'ns', 'net');
    if (o.sameNetnsAs !== undefined) fs.linkSync(path.join(this.root, String(o.sameNetnsAs), 'ns', 'net'), ns);
    else fs.writeFileSync(ns, (o.addrs ?? []).join(','));
    // Real stat lines: "pid (comm) state ppid ..." with field 22 the start time; comm may hold ") ".
    const fields = ['S', ...Array.from({ length: 18 }, (_, i) => String(i + 1)), String(o.start), '0', '0'];
    fs.writeFileSync(path.join(dir, 'stat'), `${pid} (${o.comm ?? 'pause'}) ${fields.join(' ')}\n`);
    fs.writeFileSync(path.join(dir, 'cgroup'), o.cgroup ?? '0::/\n');
  }

  probe = {
    addressesIn: async (p: string): Promise<string[]> => {
      this.probed.push(p);
      const text = fs.readFileSync(p, 'utf8');
      if (text === 'unreadable') throw new Error('EPERM');
      return text === '' ? [] : text.split(',');
    },
  };

  cleanup(): void {
    fs.rmSync(this.root, { recursive: true, force: true });
  }
}

function nodeWithPods(): FakeProc {
  const f = new FakeProc();
  f.proc(1, { start: 1, addrs: ['192.0.2.10'] }); // host netns: never a candidate
  f.proc(50, { start: 5, sameNetnsAs: 1 }); // another host-netns process
  // Pod A (10.244.1.7): pause (oldest), validation container, app, all in one netns.
  f.proc(300, { start: 300, addrs: ['127.0.0.1', '10.244.1.7', 'fd00:10:244::7'], cgroup: `0::/kubepods/burstable/pod${UID}/aaaa\n` });
  f.proc(310, { start: 310, sameNetnsAs: 300, cgroup: `0::/kubepods/burstable/pod${UID}/bbbb\n`, comm: 'sleep) (x' });
  f.proc(299, { start: 320, sameNetnsAs: 300 }); // a lower pid that started later (pid reuse)
  // Pod B (10.244.1.8).
  f.proc(400, { start: 400, addrs: ['10.244.1.8'] });
  return f;
}

test('finds the netns holding the pod IP and names it through its oldest process', async (t) => {
  const f = nodeWithPods();
  t.after(() => f.cleanup());
  const pod = repairPod({ name: 'a', podIP: '10.244.1.7', uid: UID });
  const found = await findPodNetns(pod, { procRoot: f.root, probe: f.probe });
  assert.deepEqual(found, { path: path.join(f.root, '300', 'ns', 'net'), pid: 300, via: 'cgroup+ip' });
  // The cgroup pointed straight at the pod's netns: nothing else was entered.
  assert.deepEqual(f.probed, [path.join(f.root, '300', 'ns', 'net')]);
});

test('without a cgroup match every netns is checked by IP (upstream repair), never the host one', async (t) => {
  const f = nodeWithPods();
  t.after(() => f.cleanup());
  const pod = repairPod({ name: 'b', podIP: '10.244.1.8', uid: '00000000-0000-0000-0000-000000000001' });
  const found = await findPodNetns(pod, { procRoot: f.root, probe: f.probe });
  assert.equal(found.pid, 400);
  assert.equal(found.via, 'ip');
  assert.ok(!f.probed.some((p) => p.includes(`${path.sep}1${path.sep}`) || p.includes(`${path.sep}50${path.sep}`)), 'host netns never probed');
  // The host netns holds 192.0.2.10: a pod claiming that IP (hostNetwork) finds nothing.
  await assert.rejects(
    findPodNetns(repairPod({ name: 'h', podIP: '192.0.2.10' }), { procRoot: f.root, probe: f.probe }),
    /no network namespace .* holds the pod's IP 192\.0\.2\.10/,
  );
});

test('IPv6 pod IPs are compared canonically; a cgroup match without the IP is refused', async (t) => {
  const f = nodeWithPods();
  t.after(() => f.cleanup());
  const v6 = repairPod({ name: 'a6', uid: UID });
  v6.status!.podIPs = [{ ip: 'fd00:10:244:0:0:0:0:7' }];
  assert.equal((await findPodNetns(v6, { procRoot: f.root, probe: f.probe })).pid, 300);
  // A process in pod A's cgroup that sits in pod B's netns (e.g. a debug tool entering it) must
  // not make pod B's netns pod A's.
  const g = new FakeProc();
  t.after(() => g.cleanup());
  g.proc(1, { start: 1 });
  g.proc(500, { start: 500, addrs: ['10.244.1.8'], cgroup: `0::/kubepods-besteffort-pod${UID.replace(/-/g, '_')}.slice:cri-containerd:cccc\n` });
  await assert.rejects(findPodNetns(repairPod({ name: 'a', podIP: '10.244.1.7', uid: UID }), { procRoot: g.root, probe: g.probe }), /no network namespace/);
});

test('unreadable netns are skipped; a pod without an IP and a missing /proc are clear errors', async (t) => {
  const f = new FakeProc();
  t.after(() => f.cleanup());
  f.proc(1, { start: 1 });
  f.proc(600, { start: 600, addrs: ['unreadable'] });
  f.proc(700, { start: 700, addrs: ['10.244.1.9'] });
  const logs: string[] = [];
  const found = await findPodNetns(repairPod({ name: 'c', podIP: '10.244.1.9' }), { procRoot: f.root, probe: f.probe, debug: (m) => logs.push(m) });
  assert.equal(found.pid, 700);
  assert.match(logs.join('\n'), /cannot read the addresses in .*600.*EPERM/);
  await assert.rejects(findPodNetns(repairPod({ name: 'c' }), { procRoot: f.root, probe: f.probe }), /no IP in its status/);
  await assert.rejects(
    findPodNetns(repairPod({ name: 'c', podIP: '10.244.1.9' }), { procRoot: path.join(f.root, 'nope'), probe: f.probe }),
    /is the node's \/proc mounted/,
  );
});

test('parsers: stat start time after the last ")", cgroup pod UIDs in cgroupfs and systemd forms, pod IPs', () => {
  assert.equal(parseStartTime('42 (a) b) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 0'), 987654n);
  assert.equal(parseStartTime('garbage'), undefined);
  // The one cgroup parser (src/agent/pod-netns.ts, shared with ambient).
  assert.equal(podFromCgroups(`12:pids:/kubepods/burstable/pod${UID}/9bca8d63d5fa\n0::/\n`)?.uid, UID);
  assert.equal(
    podFromCgroups(`0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID.replace(/-/g, '_')}.slice/cri-containerd-9bca.scope\n`)?.uid,
    UID,
  );
  assert.equal(podFromCgroups('0::/system.slice/containerd.service\n'), undefined);
  assert.equal(podFromCgroups('0::/../crio-45490e76e0878aaa4d9808f7d2eefba37f093c3efbba9838b6d8ab804d9bd814.scope\n')?.uid, '', 'CRI-O path without a pod UID');
  const p = repairPod({ name: 'x' });
  p.status!.podIPs = [{ ip: '10.0.0.1' }, { ip: 'FD00::0001' }, { ip: 'bogus' }];
  assert.deepEqual(podIPs(p).map(formatIp), ['10.0.0.1', 'fd00::1']);
  assert.deepEqual(podIPs({ status: { podIP: '10.0.0.2' } }).map(formatIp), ['10.0.0.2']);
  // IPv4-mapped IPv6 is the IPv4 address (as netip.Addr.Unmap), once.
  assert.deepEqual(podIPs({ status: { podIPs: [{ ip: '::ffff:10.0.0.3' }, { ip: '10.0.0.3' }] } }).map(formatIp), ['10.0.0.3']);
});
