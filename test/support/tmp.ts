// Temporary directories for tests, removed when the test process exits (pass or fail).
import * as fs from 'node:fs';

const made: string[] = [];
process.on('exit', () => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

/** fs.mkdtempSync(prefix), registered for removal at exit. */
export function tempDir(prefix: string): string {
  const d = fs.mkdtempSync(prefix);
  made.push(d);
  return d;
}
