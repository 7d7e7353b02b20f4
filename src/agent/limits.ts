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

/** What readBody got: the body's text, or why it was dropped (its bytes are never kept). */
export type BodyRead = { readonly text: string } | { readonly refused: 'too-large' | 'over-budget'; readonly size: number };

/**
 * Reads a request body of at most `maxBody` bytes, holding its bytes against `budget` only while
 * it is read: past either limit the chunks are dropped at once (the rest is drained, not kept).
 * Calls `done` once, at the end of the body.
 */
export function readBody(req: NodeJS.ReadableStream, maxBody: number, budget: ByteBudget, done: (r: BodyRead) => void): void {
  const chunks: Buffer[] = [];
  let size = 0;
  let held = 0;
  let refused: 'too-large' | 'over-budget' | undefined;
  const release = () => {
    budget.give(held);
    held = 0;
  };
  req.on('data', (c: Buffer) => {
    size += c.length;
    if (refused) return;
    if (size > maxBody) refused = 'too-large';
    else if (!budget.take(c.length)) refused = 'over-budget';
    else {
      held += c.length;
      chunks.push(c);
      return;
    }
    chunks.length = 0;
    release();
  });
  req.on('close', release);
  req.on('end', () => {
    if (refused) return done({ refused, size });
    const text = Buffer.concat(chunks).toString('utf8');
    release();
    done({ text });
  });
}
