// The istio-cni-ts executable: CNI mode when CNI_COMMAND is set (a runtime runs us as a plugin),
// otherwise the yargs CLI. The CLI is loaded lazily so the plugin's start-up does not pay for it.
import { InputError } from './values/errors';

/** Bad input exits 2 with one line naming the flag, key or variable and the value. */
export const EXIT_BAD_INPUT = 2;

/** The executables: the CLI, and `install-cni`, the name Istio's chart runs the node agent by. */
export type Program = 'istio-cni-ts' | 'install-cni';

export async function main(args: string[], program: Program = 'istio-cni-ts'): Promise<number> {
  if (program === 'istio-cni-ts' && process.env.CNI_COMMAND) return (await import('./plugin/process')).cniMain();
  const { default: yargs } = await import('yargs');
  let exitCode = 0;
  const parser = {
    'camel-case-expansion': false,
    'dot-notation': false,
    'parse-numbers': false,
    'parse-positional-numbers': false,
    'duplicate-arguments-array': false,
  };
  // Istio's flags (pflag) have no --no-<flag> negation: install-cni takes `--no-x` as unknown.
  const cli = yargs(args)
    .scriptName(program)
    .parserConfiguration(program === 'install-cni' ? { ...parser, 'boolean-negation': false } : parser);
  if (program === 'install-cni') {
    const [{ agentCommand }, { versionCommand }] = await Promise.all([import('./cli/agent'), import('./cli/version')]);
    cli
      .command({ ...agentCommand, command: '$0', describe: 'Install the Istio CNI plugin on this node and keep it installed (the node agent)' })
      .command(versionCommand);
  } else {
    const [{ rulesCommand }, { initCommand }, { installCommand }, { agentCommand }, { versionCommand }] = await Promise.all([
      import('./cli/rules'),
      import('./cli/init'),
      import('./cli/install'),
      import('./cli/agent'),
      import('./cli/version'),
    ]);
    cli.command(rulesCommand).command(initCommand).command(installCommand).command(agentCommand).command(versionCommand).demandCommand(1, 'name a command');
  }
  cli
    .strict()
    .help()
    .version(false)
    .wrap(Math.min(120, process.stdout.columns ?? 120))
    .fail((msg, err) => {
      throw err ?? new UsageError(msg);
    });
  try {
    await cli.parseAsync();
  } catch (e) {
    if (e instanceof InputError || e instanceof UsageError) {
      process.stderr.write(`${program}: ${e.message}\n`);
      exitCode = EXIT_BAD_INPUT;
    } else {
      process.stderr.write(`${program}: ${(e as Error).stack ?? String(e)}\n`);
      exitCode = 1;
    }
  }
  // Commands that finish with a status of their own (init's validation: 126) set process.exitCode.
  return exitCode || Number(process.exitCode ?? 0);
}

class UsageError extends Error {}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
