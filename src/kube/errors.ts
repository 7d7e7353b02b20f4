// The one error type of the Kubernetes layer, and the small readers of an API answer that every
// caller needs: the Status message, Retry-After, and the error an unexpected status becomes.

export class KubeError extends Error {
  constructor(
    message: string,
    /** HTTP status when the API server answered. */
    readonly status?: number,
    /** The server's Retry-After (429, 503), in ms, when it sent one in seconds. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
    this.name = 'KubeError';
  }

  /** No answer, a 5xx or 429: the API server may well answer later. */
  get transient(): boolean {
    return this.status === undefined || this.status >= 500 || this.status === 429;
  }
}

/** Retry-After in delta-seconds (what the API server sends) as ms; undefined otherwise. */
export function retryAfterMs(header: string | string[] | undefined): number | undefined {
  const v = Array.isArray(header) ? header[0] : header;
  return v !== undefined && /^\s*[0-9]{1,6}\s*$/.test(v) ? Number(v) * 1000 : undefined;
}

/** The API's Status message, if the body is one, kept short. */
export function statusMessage(body: unknown): string {
  const m = typeof body === 'object' && body !== null ? (body as { message?: unknown }).message : undefined;
  return typeof m === 'string' && m !== '' ? m.slice(0, 300) : '';
}

/** `what: HTTP <status> (<Status message>)` as a KubeError carrying the status and Retry-After. */
export function statusError(what: string, r: { status: number; body: unknown; retryAfterMs?: number }): KubeError {
  const m = statusMessage(r.body);
  return new KubeError(`${what}: HTTP ${r.status}${m ? ` (${m})` : ''}`, r.status, r.retryAfterMs);
}
