// `rules --dry-run --pod FILE [--explain] [--ipv6]`: flags in, src/plugin/dryrun.ts, text out.
import * as fs from 'node:fs';
import type { Argv } from 'yargs';
import { FIELDS } from '../capture/fields';
import { dryRunPod, parsePodManifest } from '../plugin/dryrun';
import { InputError } from '../values/errors';

export function withPodOptions<T>(y: Argv<T>): Argv<T> {
  return y
    .option('pod', {
      type: 'string',
      describe: 'Print the rules the CNI plugin would apply to this Pod (YAML or JSON, e.g. kubectl get pod NAME -o yaml); --ipv6 simulates a dual-stack pod',
    })
    .option('explain', {
      type: 'boolean',
      describe: 'With --pod: add # comments naming the annotation or setting behind each rule',
    });
}

/** undefined when --pod is not given (the other forms of `rules` then run). */
export async function runPodDryRun(argv: Record<string, unknown>, out: (text: string) => void, err: (text: string) => void): Promise<true | undefined> {
  if (argv.pod === undefined) {
    if (argv.explain !== undefined) throw new InputError('--explain', argv.explain, 'needs --pod FILE');
    return undefined;
  }
  const file = argv.pod;
  if (typeof file !== 'string' || file === '') throw new InputError('--pod', file, 'expected a file name');
  const others = FIELDS.filter((f) => f.flag && f.flag !== 'dry-run' && argv[f.flag] !== undefined).map((f) => `--${f.flag}`);
  for (const k of ['config', 'ambient']) if (argv[k] !== undefined) others.push(`--${k}`);
  if (others.length > 0) throw new InputError('--pod', file, `takes its settings from the pod, as the plugin does; drop ${others.join(', ')}`);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new InputError('--pod', file, `cannot read: ${(e as Error).message}`);
  }
  const r = dryRunPod(await parsePodManifest(text, file), { ipv6: argv.ipv6 === true, explain: argv.explain === true, env: process.env });
  for (const w of r.warnings) err(`istio-cni-ts: warning: ${w}\n`);
  out(r.text);
  return true;
}
