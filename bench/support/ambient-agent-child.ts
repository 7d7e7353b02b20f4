// The ambient agent in its own process, for bench/ambient-enroll.ts: its RSS is then the agent's
// alone. Configured by a JSON file (argv[2]); talks to the parent over the IPC channel:
//   -> {type:'ready'} once started; 'stats' -> {type:'stats', rss, heapUsed, ...}; 'stop' -> exits.
import * as fs from 'node:fs';
import { createAmbientAgent } from '../../src/agent/ambient';
import { parseAgentConfig } from '../../src/agent/config';
import { Logger } from '../../src/log/logger';
import { RestClient } from '../../src/kube/rest';

interface ChildConfig {
  apiUrl: string;
  ca: string;
  token: string;
  nodeNetns: string;
  runDir: string;
  zdsPath: string;
  nodeName: string;
  selectorsYaml: string;
  kubeletUid: number;
}

const c = JSON.parse(fs.readFileSync(process.argv[2], 'utf8')) as ChildConfig;
const errors: string[] = [];
const log: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: (m, f) => errors.length < 50 && errors.push(`warn ${m} ${JSON.stringify(f ?? {})}`),
  error: (m, f) => errors.length < 50 && errors.push(`error ${m} ${JSON.stringify(f ?? {})}`),
};

async function main(): Promise<void> {
  const cfg = parseAgentConfig(
    {},
    {
      AMBIENT_ENABLED: 'true',
      AMBIENT_ENABLEMENT_SELECTOR: c.selectorsYaml,
      CNI_AGENT_RUN_DIR: c.runDir,
      ZTUNNEL_UDS_ADDRESS: c.zdsPath,
      NODE_NAME: c.nodeName,
    },
  );
  const api = new RestClient({ server: c.apiUrl, ca: () => c.ca, token: () => c.token });
  const agent = createAmbientAgent(cfg, log, { api, hostNetns: c.nodeNetns, hostRoot: '', procRoot: '/proc', kubeletUid: c.kubeletUid });
  await agent.start();
  process.send!({ type: 'ready' });
  process.on('message', (m: { type: string }) => {
    if (m.type === 'stats') {
      const before = process.memoryUsage();
      (globalThis as { gc?: () => void }).gc?.();
      const after = process.memoryUsage();
      const p = agent.parts();
      process.send!({
        type: 'stats',
        rss: before.rss,
        rssAfterGc: after.rss,
        heapUsed: after.heapUsed,
        enrolled: p.dataplane.enrolledCount(),
        cached: p.cache.size,
        rulesApplied: p.dataplane.stats.rulesApplied,
        hostNftRuns: p.hostSets.runs,
        zdsRequests: p.zds.stats.requests,
        errors,
      });
    } else if (m.type === 'stop') {
      void agent.stop(false).then(() => process.exit(0));
    }
  });
}

main().catch((e) => {
  process.stderr.write(`ambient agent failed: ${(e as Error).stack}\n`);
  process.exit(1);
});
