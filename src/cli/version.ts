// `version`: this build as Istio prints its own (<version>-<git revision>-<build status>).
import { buildInfo, versionString } from '../version';

export const versionCommand = {
  command: 'version',
  describe: 'Print the version of this build',
  handler: () => {
    process.stdout.write(`${versionString(buildInfo())}\n`);
  },
};
