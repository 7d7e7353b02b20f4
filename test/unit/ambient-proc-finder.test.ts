// Finding pod netns through /proc (Istio's podcgroupns_linux.go): cgroup paths of kubelet's
// cgroupfs and systemd drivers and of CRI-O, the stat start time, and the walk over a fake /proc
// whose ns/net entries link to this process's own namespace files (net = "the host"; uts, ipc,
// mnt... stand in for pod netns: distinct nsfs inodes, no root needed).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { findPodNetns } from '../../src/agent/ambient/proc-finder';
import { parseCgroupPath, parseStartTime, podFromCgroups } from '../../src/agent/pod-netns';
import { MemoryLogger } from '../../src/log/logger';
import { IpAddr, parseIp } from '../../src/net/ip';
import { tempDir } from '../support/tmp';

const UID = '4e2f1c3a-9b7d-4c1e-8f2a-0123456789ab';
const CID = 'a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9';

test('cgroup paths: cgroupfs, systemd (underscores), CRI-O with and without a pod UID, and non-pod paths', () => {
  assert.deepEqual(parseCgroupPath(`/kubepods/besteffort/pod${UID}/${CID}`), { uid: UID, containerId: CID });
  assert.deepEqual(parseCgroupPath(`/kubepods/pod${UID}/${CID}`), { uid: UID, containerId: CID });
  assert.deepEqual(
    parseCgroupPath(`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID.replace(/-/g, '_')}.slice/cri-containerd-${CID}.scope`),
    { uid: UID, containerId: CID },
    'systemd: underscores become dashes, .scope dropped, runtime prefix skipped',
  );
  assert.deepEqual(parseCgroupPath(`/kubepods.slice/kubepods-pod${UID.replace(/-/g, '_')}.slice/crio-${CID}.scope`), { uid: UID, containerId: CID });
  assert.deepEqual(parseCgroupPath(`/kubepods.slice/crio-${CID}.scope`), { uid: '', containerId: CID }, 'CRI-O without a pod UID (KubeEdge)');
  assert.deepEqual(parseCgroupPath(`/kubepods/pod${UID.replace(/-/g, '')}/${CID}`), { uid: UID.replace(/-/g, ''), containerId: CID }, 'UID without separators');
  for (const p of ['/', '/user.slice/user-0.slice/session-1.scope', '/process_api/866891d76a416b6f2e721d226a17b39b', `/kubepods/besteffort/pod${UID}`]) {
    assert.equal(parseCgroupPath(p), undefined, p);
  }
});

test('a process: the first pod line wins; lines that disagree or are malformed are errors', () => {
  const ok = `12:memory:/kubepods/besteffort/pod${UID}/${CID}\n11:cpu:/kubepods/besteffort/pod${UID}/${CID}\n0::/\n`;
  assert.deepEqual(podFromCgroups(ok), { uid: UID, containerId: CID });
  assert.equal(podFromCgroups('0::/\n1:name=systemd:/user.slice\n'), undefined);
  assert.throws(() => podFromCgroups(`1:cpu:/kubepods/pod${UID}/${CID}\n2:mem:/kubepods/pod${UID}/${'f'.repeat(64)}\n`), /several container IDs/);
  const other = '5e2f1c3a-9b7d-4c1e-8f2a-0123456789ab';
  assert.throws(() => podFromCgroups(`1:cpu:/kubepods/pod${UID}/${CID}\n2:mem:/kubepods/pod${other}/${CID}\n`), /several pod UIDs/);
  assert.throws(() => podFromCgroups('no colons here\n'), /hierarchy:controllers:path/);
});

test("start time: field 22 of stat, counted after the command name's last ')'", () => {
  const fields = (comm: string) => `42 (${comm}) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 12345 67 0`;
  assert.equal(parseStartTime(fields('sleep')), 987654n);
  assert.equal(parseStartTime(fields('we(ird) ) name')), 987654n);
  assert.equal(parseStartTime('42 sleep'), undefined, 'no command name');
  assert.equal(parseStartTime('42 (x) S 1 2'), undefined, 'not enough fields');
});

// A fake /proc: <pid>/ns/net -> one of our namespace files, <pid>/cgroup, <pid>/stat.
const root = tempDir(path.join(os.tmpdir(), 'icts-fakeproc-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
function proc(pid: number, ns: string, cgroup: string, starttime: number): void {
  const d = path.join(root, String(pid));
  fs.mkdirSync(path.join(d, 'ns'), { recursive: true });
  fs.symlinkSync(`/proc/self/ns/${ns}`, path.join(d, 'ns', 'net'));
  fs.writeFileSync(path.join(d, 'cgroup'), cgroup);
  fs.writeFileSync(path.join(d, 'stat'), `${pid} (p) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 ${starttime} 0 0`);
}
const cg = (uid: string, cid: string) => `1:name=systemd:/kubepods/besteffort/pod${uid}/${cid}\n`;
const U = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
proc(1, 'net', '0::/\n', 1); // the host
proc(100, 'net', cg(U(1), 'a1'), 10); // host netns, pod cgroup (a hostNetwork pod): skipped
proc(200, 'uts', cg(U(2), 'b1'), 50); // pod 2, younger process
proc(201, 'ipc', cg(U(2), 'b2'), 20); // pod 2 again, another netns, older: wins
proc(300, 'mnt', cg(U(3), 'c1'), 10); // pod 3, but its IP check fails
proc(400, 'cgroup', cg(U(4), 'd1'), 10); // pod 4, no IPs known yet
proc(500, 'pid', cg(U(5), 'e1'), 10); // pod 5, not asked about
proc(600, 'time', cg(U(6), 'f1'), 10); // pod 6
proc(601, 'time', cg(U(6), 'f2'), 5); // same netns as 600: claimed once
fs.mkdirSync(path.join(root, 'self'));
fs.writeFileSync(path.join(root, 'meminfo'), '');

test('the walk: host netns and unwanted pods skipped, the IP check refuses, no IP defers, the oldest process wins', async () => {
  const ip = (s: string) => parseIp(s)!;
  const wanted = new Map<string, IpAddr[]>([
    [U(1), [ip('10.0.0.1')]],
    [U(2), [ip('10.0.0.2')]],
    [U(3), [ip('10.0.0.3')]],
    [U(4), []],
    [U(6), [ip('10.0.0.6')]],
  ]);
  const checked: string[] = [];
  const log = new MemoryLogger();
  const found = await findPodNetns(wanted, {
    procRoot: root,
    log,
    holdsAnyAddress: async (h, ips) => {
      checked.push(h.source);
      return !ips.some((x) => x.bytes[3] === 3);
    },
  });
  try {
    assert.deepEqual([...found.keys()].sort(), [U(2), U(6)]);
    const ino = (ns: string) => fs.statSync(`/proc/self/ns/${ns}`, { bigint: true }).ino;
    assert.equal(found.get(U(2))!.ino, ino('ipc'), 'the older process (start time 20) wins');
    assert.equal(found.get(U(2))!.ownerStarttime, 20n);
    assert.equal(found.get(U(6))!.ino, ino('time'));
    assert.ok(!checked.some((c) => c.includes('/100/')), 'host netns never checked');
    assert.ok(log.has('warn', /refusing the pairing/));
    assert.ok(log.has('warn', /more than one netns/));
  } finally {
    for (const h of found.values()) h.release();
  }
});
