// The one redactor: secrets that must never reach a log (the kubeconfig's bearer token). Every
// rendered line is scrubbed before it is written anywhere; both the raw text and its
// JSON-escaped form are replaced.

/** Tokens rotate (hourly for projected service-account tokens): keep only the newest ones. */
const MAX_SECRETS = 16;

export class Redactor {
  private readonly added: string[] = [];
  private patterns: string[] = [];

  add(secret: string | undefined): void {
    // Very short strings would blank out ordinary words; real tokens are long.
    if (!secret || secret.length < 6 || this.added.includes(secret)) return;
    this.added.push(secret);
    if (this.added.length > MAX_SECRETS) this.added.shift();
    const all = new Set(this.added.flatMap((s) => [s, JSON.stringify(s).slice(1, -1)]));
    // Longest first, so a secret that contains another is replaced whole.
    this.patterns = [...all].sort((a, b) => b.length - a.length);
  }

  scrub(text: string): string {
    let out = text;
    for (const s of this.patterns) if (out.includes(s)) out = out.split(s).join('[redacted]');
    return out;
  }
}
