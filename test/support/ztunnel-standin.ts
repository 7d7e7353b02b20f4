// A ztunnel stand-in for tests: it connects to the agent's ZDS socket, says hello, and answers
// every request with an ack, as ztunnel does. Its protobuf schema is its own .proto text parsed
// by protobufjs (the agent's encoder and decoder are not used), so the two sides only agree if
// both follow zds.proto's field numbers.
//
// With `inPod`, every Add makes it do what ztunnel's in-pod mode does with the netns fd it gets:
// open listeners inside that netns, here on 15001 (outbound), 15006 (inbound plaintext) and
// 15008 (HBONE). Each accepted connection is answered with one JSON line saying which listener
// took it and the connection's original destination (SO_ORIGINAL_DST), as the probe server does.
//
// State survives reconnects as ztunnel's does: after SnapshotSent it drops workloads the snapshot
// did not name (neither added nor kept).
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as protobuf from 'protobufjs';
import { SeqpacketSocket, closeFd } from '../../src/netns/seqpacket';
import { getOriginalDst, withNetnsSync } from '../../src/netns/nft';

const ZDS_PROTO = `
syntax = "proto3";
package istio.workload.zds;

enum Version { NOT_USED = 0; V1 = 1; }
message ZdsHello { Version version = 1; }
message WorkloadInfo {
  string name = 1;
  string namespace = 2;
  string service_account = 3;
}
message AddWorkload { string uid = 1; WorkloadInfo workload_info = 2; }
message KeepWorkload { string uid = 1; }
message DelWorkload { string uid = 2; }
message SnapshotSent {}
message Ack { string error = 1; }
message WorkloadRequest {
  oneof payload {
    AddWorkload add = 1;
    DelWorkload del = 2;
    SnapshotSent snapshot_sent = 3;
    KeepWorkload keep = 5;
  }
}
message WorkloadResponse { oneof payload { Ack ack = 1; } }
`;

const root = protobuf.parse(ZDS_PROTO, { keepCase: true }).root;
const Hello = root.lookupType('istio.workload.zds.ZdsHello');
const Request = root.lookupType('istio.workload.zds.WorkloadRequest');
const Response = root.lookupType('istio.workload.zds.WorkloadResponse');

export const ZTUNNEL_PORTS = { outbound: 15001, inbound: 15006, hbone: 15008 } as const;

export type Received =
  | { kind: 'add'; uid: string; name: string; namespace: string; serviceAccount: string; fdIno: bigint | undefined }
  | { kind: 'keep'; uid: string }
  | { kind: 'del'; uid: string }
  | { kind: 'snapshot_sent' }
  | { kind: 'unknown' };

export interface StandInWorkload {
  uid: string;
  name: string;
  namespace: string;
  fd: number;
  ino: bigint;
  listeners: net.Server[];
}

export interface StandInOptions {
  /** Open 15001/15006/15008 in each pod netns. */
  inPod?: boolean;
  /** What to answer: an error text ('' = ok), or 'never' to leave the request without an ack. */
  ack?: (r: Received) => string | 'never';
  /** Replaces the hello record (e.g. garbage). */
  hello?: Buffer;
}

/** Encodes a hello with this stand-in's own schema. */
export function encodeHello(version = 1): Buffer {
  return Buffer.from(Hello.encode(Hello.fromObject({ version })).finish());
}

export function encodeAck(error: string): Buffer {
  return Buffer.from(Response.encode(Response.fromObject({ ack: { error } })).finish());
}

/** A request as protobufjs' toObject gives it: proto field names, the oneof's member named in `payload`. */
interface DecodedRequest {
  payload?: string;
  add?: { uid: string; workload_info?: { name?: string; namespace?: string; service_account?: string } };
  keep?: { uid: string };
  del?: { uid: string };
}

function decodeRequest(data: Buffer, fds: readonly number[]): Received {
  const m = Request.toObject(Request.decode(data), { oneofs: true, defaults: true }) as DecodedRequest;
  switch (m.payload) {
    case 'add': {
      const info = m.add!.workload_info ?? {};
      let fdIno: bigint | undefined;
      if (fds.length > 0) fdIno = fs.fstatSync(fds[0], { bigint: true }).ino;
      return { kind: 'add', uid: m.add!.uid, name: info.name ?? '', namespace: info.namespace ?? '', serviceAccount: info.service_account ?? '', fdIno };
    }
    case 'keep':
      return { kind: 'keep', uid: m.keep!.uid };
    case 'del':
      return { kind: 'del', uid: m.del!.uid };
    case 'snapshot_sent':
      return { kind: 'snapshot_sent' };
    default:
      return { kind: 'unknown' };
  }
}

export class ZtunnelStandIn {
  readonly workloads = new Map<string, StandInWorkload>();
  /** Every request, in order, across connections. */
  readonly received: Received[] = [];
  /** The UIDs each completed snapshot named (adds and keeps), one list per connection. */
  readonly snapshots: string[][] = [];
  private sock?: SeqpacketSocket;
  private current = new Set<string>();
  private inSnapshot = false;
  private waiters: (() => void)[] = [];
  /** Failures of the stand-in itself (for test diagnostics). */
  readonly errors: string[] = [];
  /** Set when the agent closed the connection. */
  disconnectedByAgent = false;

  constructor(
    readonly socketPath: string,
    private readonly opts: StandInOptions = {},
  ) {}

  get connected(): boolean {
    return !!this.sock && !this.sock.closed;
  }

  /** Connects and says hello; requests are then answered as they come. */
  async connect(): Promise<void> {
    this.disconnect();
    const sock = SeqpacketSocket.connect(this.socketPath);
    this.sock = sock;
    this.disconnectedByAgent = false;
    this.current = new Set();
    this.inSnapshot = true;
    await sock.send(this.opts.hello ?? encodeHello(1), undefined, 5000);
    void this.loop(sock);
  }

  private async loop(sock: SeqpacketSocket): Promise<void> {
    for (;;) {
      let rec;
      try {
        rec = await sock.recv({ maxBytes: 65536, maxFds: 4 });
      } catch {
        return; // closed by us
      }
      if (rec.data.length === 0) {
        this.disconnectedByAgent = true;
        sock.close();
        this.notify();
        return;
      }
      let r: Received;
      try {
        r = decodeRequest(rec.data, rec.fds);
      } catch {
        r = { kind: 'unknown' };
      }
      this.received.push(r);
      const extra = r.kind === 'add' ? rec.fds.slice(1) : rec.fds;
      for (const fd of extra) closeFd(fd);
      this.apply(r, rec.fds[0]);
      const answer = this.opts.ack?.(r) ?? '';
      this.notify();
      if (answer === 'never') continue;
      try {
        await sock.send(encodeAck(answer), undefined, 5000);
      } catch (e) {
        this.errors.push(`ack for ${r.kind}: ${(e as Error).message}`);
        return;
      }
    }
  }

  private apply(r: Received, fd: number | undefined): void {
    switch (r.kind) {
      case 'add': {
        if (fd === undefined) return;
        this.drop(r.uid);
        const w: StandInWorkload = { uid: r.uid, name: r.name, namespace: r.namespace, fd, ino: r.fdIno!, listeners: [] };
        if (this.opts.inPod) w.listeners = this.listenInPod(w);
        this.workloads.set(r.uid, w);
        if (this.inSnapshot) this.current.add(r.uid);
        break;
      }
      case 'keep':
        if (this.inSnapshot) this.current.add(r.uid);
        break;
      case 'del':
        this.drop(r.uid);
        break;
      case 'snapshot_sent':
        this.snapshots.push([...this.current].sort());
        for (const uid of [...this.workloads.keys()]) if (!this.current.has(uid)) this.drop(uid);
        this.inSnapshot = false;
        break;
    }
  }

  /** Listeners inside the pod's netns, made with the JS thread briefly in it. */
  private listenInPod(w: StandInWorkload): net.Server[] {
    const servers: net.Server[] = [];
    withNetnsSync(`/proc/self/fd/${w.fd}`, () => {
      for (const [label, port] of Object.entries(ZTUNNEL_PORTS)) {
        const srv = net.createServer((c) => {
          const fdOf = (c as unknown as { _handle?: { fd?: number } })._handle?.fd;
          let origDst: unknown = null;
          try {
            origDst = typeof fdOf === 'number' ? getOriginalDst(fdOf) : null;
          } catch {
            origDst = null;
          }
          c.end(
            `${JSON.stringify({
              label: `ztunnel-${label}`,
              uid: w.uid,
              local: { address: c.localAddress, port: c.localPort },
              remote: { address: c.remoteAddress, port: c.remotePort },
              origDst,
            })}\n`,
          );
        });
        // No host: the socket is created and bound synchronously, inside the netns.
        srv.listen(port);
        servers.push(srv);
      }
    });
    return servers;
  }

  private drop(uid: string): void {
    const w = this.workloads.get(uid);
    if (!w) return;
    this.workloads.delete(uid);
    for (const s of w.listeners) s.close();
    closeFd(w.fd);
  }

  private notify(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves when `pred` holds (checked after every request), or rejects after `timeoutMs`. */
  async waitFor(pred: () => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`ztunnel stand-in: timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 50));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Closes the connection (as a ztunnel restart does); workloads are kept. */
  disconnect(): void {
    this.sock?.close();
    this.sock = undefined;
  }

  /** Disconnects and drops every workload (listeners closed, fds closed). */
  close(): void {
    this.disconnect();
    for (const uid of [...this.workloads.keys()]) this.drop(uid);
  }
}
