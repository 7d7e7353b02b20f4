// The ambient half of the node agent in a process of its own, for tests that must kill it
// (SIGKILL) rather than stop it: the same agent and test deps as AmbientEnv.startAgent (short
// ZDS accept interval, informer backoff and retry), configured by a JSON file (argv[2]):
//   { env: {AMBIENT_ENABLED: 'true', ...}, apiUrl, ca, token, hostNetns, kubeletUid }
// It logs one JSON line per log call on stdout ({level, msg, fields}), then {"msg":"child ready"}
// once start() resolved. SIGTERM stops it as an upgrade does (host rule and probe sets kept,
// `skipCleanup`), SIGINT as a removal (cleaned up); both exit 0.
// Its host rule and probe sets go into `hostNetns` (the test's "node" netns), never into the real
// host's nftables. (It runs in the host netns itself: the API stand-in listens on 127.0.0.1.)
import * as fs from 'node:fs';
import { createAmbientAgent } from '../../src/agent/ambient';
import { parseAgentConfig } from '../../src/agent/config';
import { Logger, LogFields } from '../../src/log/logger';
import { RestClient } from '../../src/kube/rest';

export interface AmbientChildConfig {
  env: Record<string, string>;
  apiUrl: string;
  ca: string;
  token: string;
  hostNetns: string;
  kubeletUid: number;
}

const c = JSON.parse(fs.readFileSync(process.argv[2], 'utf8')) as AmbientChildConfig;

const write = (level: string, msg: string, fields?: LogFields) =>
  process.stdout.write(`${JSON.stringify({ t: Date.now(), level, msg, fields }, (_k, v) => (typeof v === 'bigint' ? String(v) : v))}\n`);
const log: Logger = {
  debug: (m, f) => write('debug', m, f),
  info: (m, f) => write('info', m, f),
  warn: (m, f) => write('warn', m, f),
  error: (m, f) => write('error', m, f),
};

async function main(): Promise<void> {
  const cfg = parseAgentConfig({}, c.env);
  const api = new RestClient({ server: c.apiUrl, ca: () => c.ca, token: () => c.token });
  const agent = createAmbientAgent(cfg, log, {
    api,
    hostNetns: c.hostNetns,
    hostRoot: '',
    procRoot: '/proc',
    kubeletUid: c.kubeletUid,
    zdsTimeouts: { acceptIntervalMs: 50 },
    informer: { backoffMinMs: 50, backoffMaxMs: 500 },
    retry: { baseMs: 20, maxMs: 300 },
    hostSetupRetry: { attempts: 1, intervalMs: 0 },
  });
  const stop = (skipCleanup: boolean) => () => {
    void agent.stop(skipCleanup).then(() => {
      api.close();
      write('info', 'child stopped', { skipCleanup });
      process.exit(0);
    });
  };
  process.once('SIGTERM', stop(true));
  process.once('SIGINT', stop(false));
  await agent.start();
  write('info', 'child ready', { pid: process.pid });
}

main().catch((e) => {
  process.stderr.write(`ambient agent child failed: ${(e as Error).stack}\n`);
  process.exit(1);
});
