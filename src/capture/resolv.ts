import * as fs from 'node:fs';

/** Nameservers from a resolv.conf, split by family; a missing file means none. */
export function readResolvConf(path: string): { v4: string[]; v6: string[] } {
  let text = '';
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch {
    return { v4: [], v6: [] };
  }
  const v4: string[] = [];
  const v6: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (!m) continue;
    (m[1].includes(':') ? v6 : v4).push(m[1]);
  }
  return { v4, v6 };
}
