// Timed execs the way a runtime written in Go makes them: bench/burst-launcher.c (posix_spawn,
// compiled here with gcc) starts one process per netns at once and reports the wall time from its
// first spawn to its last exit; a single run is a burst of one. The launcher is started with
// Node's async spawn, so this process's event loop (an API stand-in may live in it) keeps running.
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PACKAGE_ROOT } from './paths';

export interface Exec {
  code: number;
  stdout: string;
  stderr: string;
}

export interface Launched {
  wallMs: number;
  runs: Exec[];
}

export interface LaunchSpec {
  program: string;
  /** Arguments; "@NETNS@" in one is replaced by each run's netns path. */
  args?: string[];
  /** The whole environment of every run (CNI_NETNS is added per run). */
  env: Record<string, string>;
  stdin: string;
}

export class Launcher {
  private readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'icts-bench-launch-'));
  private readonly bin = path.join(this.dir, 'burst-launcher');
  private seq = 0;

  constructor() {
    execFileSync('gcc', ['-O2', '-o', this.bin, path.join(PACKAGE_ROOT, 'bench', 'burst-launcher.c')]);
  }

  /** Runs `spec` once per netns path, all at once. */
  async run(spec: LaunchSpec, netns: readonly string[]): Promise<Launched> {
    const out = path.join(this.dir, `r${this.seq++}`);
    fs.mkdirSync(out);
    try {
      const stdinFile = path.join(out, 'stdin');
      fs.writeFileSync(stdinFile, spec.stdin);
      const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
        const c = spawn(this.bin, [stdinFile, out, spec.program, ...(spec.args ?? []), '--', ...netns], { env: spec.env, stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        c.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
        c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
        c.on('error', reject);
        c.on('close', (code) => resolve({ code, stdout, stderr }));
      });
      const m = /^wall_ms ([\d.]+)$/m.exec(r.stdout);
      if (r.code !== 0 || !m) throw new Error(`burst-launcher ${spec.program}: exit ${r.code}: ${r.stderr}`);
      const runs = netns.map((_, i) => ({
        code: Number(fs.readFileSync(path.join(out, `${i}.rc`), 'utf8')),
        stdout: fs.readFileSync(path.join(out, `${i}.out`), 'utf8'),
        stderr: fs.readFileSync(path.join(out, `${i}.err`), 'utf8'),
      }));
      return { wallMs: Number(m[1]), runs };
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  }

  close(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
