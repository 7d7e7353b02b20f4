// The istio-cni-ts executable: the yargs CLI (CNI mode arrives with the plugin).
import yargs from 'yargs';
import { InputError } from './values/errors';
import { rulesCommand } from './cli/rules';
import { installCommand } from './cli/install';
import { agentCommand } from './cli/agent';

/** Bad input exits 2 with one line naming the flag, key or variable and the value. */
export const EXIT_BAD_INPUT = 2;

export async function main(args: string[]): Promise<number> {
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
    .command(installCommand).command(agentCommand)
    .demandCommand(1, 'name a command (rules)')
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
  return exitCode;
}

class UsageError extends Error {}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
