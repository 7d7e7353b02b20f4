// Child of addon-high-fds.test: holds 5,000 more fds than it needs, so every fd opened from then
// on (the netns fd, the script's memfd, and, without a private fd table, libnftables' netlink
// socket) is numbered above FD_SETSIZE; then applies a table, and runs apply/remove pairs.
// Prints one JSON line. usage: node addon-high-fds-child.js <netns path> <pairs>
import * as fs from 'node:fs';
import { applyNft, deleteTables, listRulesetJson } from '../../../src/netns/nft';
import { openFdCount, threadNetns } from './addon-support';

const HELD = 5000;
const TABLE = { family: 'inet', table: 'icts-high-fds' } as const;
const script = (port: number) =>
  `table inet icts-high-fds {\n  chain c {\n    type filter hook input priority 0; policy accept;\n    tcp dport ${port} counter\n  }\n}\n`;

/** Every thread in the process' netns; job threads that are still closing get a moment to end. */
async function threadsHome(): Promise<boolean> {
  for (let i = 0; i < 200; i++) {
    const now = threadNetns();
    if ([...now.threads.values()].every((ns) => ns === now.process)) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return false;
}

async function main(): Promise<void> {
  const [nsPath, pairsArg] = process.argv.slice(2);
  const held: number[] = [];
  for (let i = 0; i < HELD; i++) held.push(fs.openSync('/dev/null', 'r'));
  const probe = fs.openSync('/dev/null', 'r');
  fs.closeSync(probe);

  await applyNft(nsPath, script(4242));
  const listed = await listRulesetJson(nsPath);
  const firstRules = listed.nftables.flatMap((i) => (i.rule ? [i.rule.expr] : []));

  // Warm-up pair, then count: the addon's threads and Node's own lazily made descriptors.
  await applyNft(nsPath, script(1));
  await deleteTables(nsPath, [TABLE]);
  await threadsHome();
  const fdsBefore = openFdCount();
  const t0 = Date.now();
  for (let i = 0; i < Number(pairsArg); i++) {
    await applyNft(nsPath, script(10000 + i));
    await deleteTables(nsPath, [TABLE]);
  }
  const ms = Date.now() - t0;
  const home = await threadsHome();
  const fdsAfter = openFdCount();
  const left = await listRulesetJson(nsPath);
  process.stdout.write(
    `${JSON.stringify({
      probeFd: probe,
      firstRules,
      fdsBefore,
      fdsAfter,
      home,
      ms,
      tablesLeft: left.nftables.filter((i) => i.table).length,
    })}\n`,
  );
  for (const fd of held) fs.closeSync(fd);
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exit(1);
});
