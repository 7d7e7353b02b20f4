// The istio-cni-ts executable: CNI mode when CNI_COMMAND is set (a runtime runs us as a plugin),
// otherwise the yargs CLI. The CLI is loaded lazily so the plugin's start-up does not pay for it.
import { InputError } from './values/errors';

/** Bad input exits 2 with one line naming the flag, key or variable and the value. */
export const EXIT_BAD_INPUT = 2;

export async function main(args: string[]): Promise<number> {
  if (process.env.CNI_COMMAND) return (await import('./plugin/process')).runCniProcess();
  const [{ default: yargs }, { rulesCommand }, { initCommand }, { installCommand }, { agentCommand }] = await Promise.all([
    import('yargs'), import('./cli/rules'), import('./cli/init'), import('./cli/install'), import('./cli/agent'),
  ]);
  let exitCode = 0;
  const cli = yargs(args)
    .scriptName('istio-cni-ts')
    .parserConfiguration({
      'camel-case-expansion': false,
      'dot-notation': false,
      'parse-numbers': false,
      'parse-positional-numbers': false,
      'duplicate-arguments-array': false,
    })
    .command(rulesCommand)
    .command(initCommand)
    .command(installCommand)
    .command(agentCommand)
    .demandCommand(1, 'name a command')
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
      process.stderr.write(`istio-cni-ts: ${e.message}\n`);
      exitCode = EXIT_BAD_INPUT;
    } else {
      process.stderr.write(`istio-cni-ts: ${(e as Error).stack ?? String(e)}\n`);
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
