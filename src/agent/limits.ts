// The limits every server of the agent has (docs/reliability.md, "Security"), in one place: a
// local process, or a pod that reaches the node, must not be able to hold the agent's
// descriptors or memory by connecting and staying, dripping or sending too much.
//
// Sized for a real node: kubelet probes a few times a period, Prometheus scrapes once or twice,
// and a node may start a few hundred pods at once (each ADD is one shim request, one log POST
// and, in ambient mode, one plugin event). At a cap the listener stops accepting: newcomers wait
// in the kernel's backlog (the shim's ack timeout then sends them to the standalone plugin).

export interface ServerLimits {
  /** Connections served at once; at the cap the listener pauses. */
  readonly maxConnections: number;
  /** Bytes of request bodies buffered at once across all connections (0: none buffered). */
  readonly maxBufferedBytes: number;
}

const MiB = 1 << 20;

export const LIMITS = {
  health: { maxConnections: 64, maxBufferedBytes: 0 },
  metrics: { maxConnections: 16, maxBufferedBytes: 0 },
  logSocket: { maxConnections: 128, maxBufferedBytes: 16 * MiB },
  pluginEvent: { maxConnections: 256, maxBufferedBytes: 16 * MiB },
  cniShim: { maxConnections: 256, maxBufferedBytes: 64 * MiB },
  zds: { maxConnections: 8, maxBufferedBytes: 0 },
} as const satisfies Record<string, ServerLimits>;

/** HTTP servers (health, metrics, log.sock, pluginevent.sock). */
export const HTTP_TIMEOUTS = {
  /** The whole header block, from the connection's (or the request's) first byte. */
  headersMs: 10_000,
  /** The whole request, body included. */
  requestMs: 30_000,
  /** An idle kept-alive connection. */
  keepAliveMs: 5_000,
  /** How often Node checks the two above. */
  checkIntervalMs: 1_000,
} as const;

/** cni-shim.sock: the whole request (header, env, stdin) must arrive within this, from accept. */
export const SHIM_REQUEST_DEADLINE_MS = 10_000;

/** Bytes buffered across connections: a request that would pass the cap is refused. */
export class ByteBudget {
  private used = 0;

  constructor(readonly max: number) {}

  get inUse(): number {
    return this.used;
  }

  /** Reserves n bytes; false (nothing reserved) when that would pass the cap. */
  take(n: number): boolean {
    if (n < 0 || this.used + n > this.max) return false;
    this.used += n;
    return true;
  }

  give(n: number): void {
    this.used = Math.max(0, this.used - n);
  }
}
