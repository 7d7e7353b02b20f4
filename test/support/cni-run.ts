// Runs the built executable as a container runtime runs a CNI plugin: the CNI_* environment,
// the network config on stdin, then stdout, stderr and the exit code.
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { PACKAGE_ROOT } from './conformance';

export const BIN = path.join(PACKAGE_ROOT, 'bin', 'istio-cni-ts.js');

export interface CniRun {
  stdout: string;
  stderr: string;
  code: number | null;
  ms: number;
}

/** `bin` defaults to this checkout's executable (a test may run a private copy of the package). */
export function runPlugin(env: Record<string, string>, stdin: string, bin = BIN): Promise<CniRun> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin], { env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ stdout, stderr, code, ms: Date.now() - t0 }));
    child.stdin.end(stdin);
  });
}

/** The JSON lines the plugin wrote to stderr. */
export function logLines(text: string): Record<string, unknown>[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}
