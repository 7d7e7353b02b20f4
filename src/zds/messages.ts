// ZDS ("ztunnel discovery service"), the messages the node agent and ztunnel exchange over a
// SOCK_SEQPACKET socket, one protobuf message per record. The schema is ztunnel's and Istio's
// proto/zds.proto (package istio.workload.zds); the field numbers below are that file's, written
// here as a protobufjs JSON descriptor so no .proto parser is loaded at run time.
//
//   ZdsHello         { version = 1 (enum Version: NOT_USED = 0, V1 = 1) }          ztunnel -> agent, first
//   WorkloadInfo     { name = 1, namespace = 2, service_account = 3 }  (4 reserved, was trust_domain)
//   AddWorkload      { uid = 1, workload_info = 2 }     + the pod's netns fd as SCM_RIGHTS
//   KeepWorkload     { uid = 1 }                        only inside a snapshot
//   DelWorkload      { uid = 2 }                        note: 2, not 1
//   SnapshotSent     { }
//   WorkloadRequest  oneof payload { add = 1, del = 2, snapshot_sent = 3, keep = 5 }   agent -> ztunnel
//   Ack              { error = 1 }                      empty error = success
//   WorkloadResponse oneof payload { ack = 1 }          ztunnel -> agent, one per request
import * as protobuf from 'protobufjs/light';

const DESCRIPTOR = {
  nested: {
    istio: {
      nested: {
        workload: {
          nested: {
            zds: {
              nested: {
                Version: { values: { NOT_USED: 0, V1: 1 } },
                ZdsHello: { fields: { version: { type: 'Version', id: 1 } } },
                WorkloadInfo: {
                  fields: {
                    name: { type: 'string', id: 1 },
                    namespace: { type: 'string', id: 2 },
                    serviceAccount: { type: 'string', id: 3 },
                  },
                  reserved: [[4, 4], 'trust_domain'],
                },
                AddWorkload: {
                  fields: { uid: { type: 'string', id: 1 }, workloadInfo: { type: 'WorkloadInfo', id: 2 } },
                },
                KeepWorkload: { fields: { uid: { type: 'string', id: 1 } } },
                DelWorkload: { fields: { uid: { type: 'string', id: 2 } } },
                SnapshotSent: { fields: {} },
                Ack: { fields: { error: { type: 'string', id: 1 } } },
                WorkloadRequest: {
                  oneofs: { payload: { oneof: ['add', 'keep', 'del', 'snapshotSent'] } },
                  fields: {
                    add: { type: 'AddWorkload', id: 1 },
                    keep: { type: 'KeepWorkload', id: 5 },
                    del: { type: 'DelWorkload', id: 2 },
                    snapshotSent: { type: 'SnapshotSent', id: 3 },
                  },
                },
                WorkloadResponse: {
                  oneofs: { payload: { oneof: ['ack'] } },
                  fields: { ack: { type: 'Ack', id: 1 } },
                },
              },
            },
          },
        },
      },
    },
  },
};

let types: { hello: protobuf.Type; request: protobuf.Type; response: protobuf.Type } | undefined;

function schema() {
  if (!types) {
    const root = protobuf.Root.fromJSON(DESCRIPTOR);
    types = {
      hello: root.lookupType('istio.workload.zds.ZdsHello'),
      request: root.lookupType('istio.workload.zds.WorkloadRequest'),
      response: root.lookupType('istio.workload.zds.WorkloadResponse'),
    };
  }
  return types;
}

export interface WorkloadInfo {
  readonly name: string;
  readonly namespace: string;
  readonly serviceAccount: string;
}

export type WorkloadRequest =
  | { readonly kind: 'add'; readonly uid: string; readonly workload: WorkloadInfo }
  | { readonly kind: 'keep'; readonly uid: string }
  | { readonly kind: 'del'; readonly uid: string }
  | { readonly kind: 'snapshotSent' };

/** A request as ztunnel reads it. The netns fd of an `add` travels beside it, not in it. */
export function encodeRequest(r: WorkloadRequest): Buffer {
  const t = schema().request;
  let payload: Record<string, unknown>;
  switch (r.kind) {
    case 'add':
      payload = { add: { uid: r.uid, workloadInfo: { ...r.workload } } };
      break;
    case 'keep':
      payload = { keep: { uid: r.uid } };
      break;
    case 'del':
      payload = { del: { uid: r.uid } };
      break;
    case 'snapshotSent':
      payload = { snapshotSent: {} };
      break;
  }
  return Buffer.from(t.encode(t.fromObject(payload)).finish());
}

/** A record that is not the message it should be. */
export class ZdsDecodeError extends Error {
  override readonly name = 'ZdsDecodeError';
}

function decode(t: protobuf.Type, data: Buffer, what: string): Record<string, unknown> {
  try {
    const m = t.decode(data);
    return t.toObject(m, { enums: String, defaults: false, oneofs: true }) as Record<string, unknown>;
  } catch (e) {
    throw new ZdsDecodeError(`malformed ${what} (${data.length} bytes): ${(e as Error).message}`);
  }
}

export interface ZdsHello {
  /** "V1" from today's ztunnel; "NOT_USED", or a number for a value this schema does not know. */
  readonly version: string;
}

/**
 * ztunnel's first record. Like upstream the version is reported, not checked; an empty record
 * is end of stream, never a hello (Go reads a zero-length record as io.EOF).
 */
export function decodeHello(data: Buffer): ZdsHello {
  const o = decode(schema().hello, data, 'ZdsHello');
  const v = o.version;
  return { version: v === undefined ? 'NOT_USED' : String(v) };
}

export interface Ack {
  /** Empty: the request succeeded. */
  readonly error: string;
}

/**
 * ztunnel's answer to one request. A response without an ack (a newer ztunnel's other payload,
 * or none) counts as an ack with no error, as upstream's `resp.GetAck().GetError() == ""` does.
 */
export function decodeResponse(data: Buffer): Ack {
  const o = decode(schema().response, data, 'WorkloadResponse');
  const ack = o.ack as { error?: unknown } | undefined;
  return { error: typeof ack?.error === 'string' ? ack.error : '' };
}
