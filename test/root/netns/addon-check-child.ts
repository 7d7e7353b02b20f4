// Child of addon-apply.test: checks every capture golden with the addon in check mode, inside a
// mount namespace whose /etc/group names the goldens' groups. One JSON line per case.
// usage: node addon-check-child.js <netns path>
import { applyTransaction, listRulesetJson } from '../../../src/netns/nft';
import { captureCaseNames, captureTx } from './addon-support';

async function main(): Promise<void> {
  const nsPath = process.argv[2];
  for (const name of captureCaseNames()) {
    let ok = true;
    let error: string | undefined;
    try {
      await applyTransaction(nsPath, captureTx(name), { check: true });
    } catch (e) {
      ok = false;
      error = (e as Error).message;
    }
    const json = await listRulesetJson(nsPath);
    const leftover = json.nftables.some((i) => !i.metainfo);
    process.stdout.write(`${JSON.stringify({ case: name, ok, error, leftover })}\n`);
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exit(1);
});
