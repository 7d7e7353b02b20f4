// The typed surface over the native addon: nftables transactions applied inside a network
// namespace by libnftables (each call on its own short-lived pthread, never on the JS thread or
// a libuv pool thread), a synchronous "run this with the JS thread in that netns" for creating
// sockets there, and the two socket helpers redirect tests and `init --run-validation` need.
import * as fs from 'node:fs';
import { TableRef, Transaction, render, tablesOf } from '../nft/transaction';
import { addon } from './addon';

/** The process' own network namespace, for applying where we run (`init` without --netns). */
export const CURRENT_NETNS = '/proc/self/ns/net';

export interface ApplyOptions {
  /** Check only (nft -c): the kernel validates the whole transaction, then it is aborted. */
  readonly check?: boolean;
}

export interface TransactionOptions extends ApplyOptions {
  /**
   * Tables to replace even when the transaction does not touch them: a table absent from the new
   * transaction is removed. Pass every table the component owns (e.g. the three sidecar tables),
   * so a config that no longer needs a table (TPROXY -> REDIRECT drops the mangle table) leaves
   * none of the old one behind.
   */
  readonly replace?: readonly TableRef[];
}

/**
 * Any failure of applyNft, applyTransaction, listRulesetJson or deleteTables. `code` is "ENFT"
 * when nft itself refused the script (then `stderr` holds its diagnostics, each with
 * "<script>:LINE:COL" and the offending line), or an errno name when the namespace could not be
 * opened or entered ("ENOENT": no such netns file; "EINVAL": not a network namespace).
 */
export class NftError extends Error {
  override readonly name = 'NftError';
  constructor(
    message: string,
    readonly code: string,
    readonly netnsPath: string,
    /** The script that was run (as handed to libnftables). */
    readonly script: string,
    /** nft's error text; empty when nft never ran. */
    readonly stderr: string,
  ) {
    super(message);
  }
}

/** withNetnsSync could not open or enter the namespace. */
export class NetnsError extends Error {
  override readonly name = 'NetnsError';
  constructor(
    message: string,
    readonly code: string,
    readonly netnsPath: string,
  ) {
    super(message);
  }
}

interface NativeError extends Error {
  code?: string;
  nftError?: string;
}

async function run(netnsPath: string, script: string, dryRun: boolean, json: boolean): Promise<string> {
  try {
    const r = await addon().nftRun(netnsPath, script, dryRun, json);
    return r.output;
  } catch (e) {
    const n = e as NativeError;
    throw new NftError(n.message, n.code ?? 'ENFT', netnsPath, script, n.nftError ?? '');
  }
}

/** Runs an nft script in the netns as one transaction: all of it applies, or none. */
export async function applyNft(netnsPath: string, script: string, opts: ApplyOptions = {}): Promise<void> {
  await run(netnsPath, script, opts.check ?? false, false);
}

/** `add table` then `delete table` for each: removes them whether or not they exist. */
function wipeScript(tables: readonly TableRef[]): string {
  return tables.map((t) => `add table ${t.family} ${t.table}\ndelete table ${t.family} ${t.table}\n`).join('');
}

/**
 * The script applyTransaction hands to nft: for every table the transaction touches (then every
 * table in `replace` it does not), `add table` then `delete table` (nft 1.0.6 has no
 * `destroy table`; adding first makes the delete safe when the table is absent), followed by
 * the transaction's own text, render(tx), unchanged. In one nft run this replaces those tables
 * whole, so nothing stale from an earlier config survives. `--dry-run` prints render(tx).
 */
export function replaceScript(tx: Transaction, replace: readonly TableRef[] = []): string {
  const tables = new Map<string, TableRef>();
  for (const t of [...tablesOf(tx), ...replace]) {
    const key = `${t.family} ${t.table}`;
    if (!tables.has(key)) tables.set(key, { family: t.family, table: t.table });
  }
  return wipeScript([...tables.values()]) + render(tx);
}

/**
 * Replaces every table `tx` touches (and those in opts.replace) with exactly what `tx` builds,
 * atomically: on failure the netns keeps its previous ruleset.
 */
export async function applyTransaction(
  netnsPath: string,
  tx: Transaction,
  opts: TransactionOptions = {},
): Promise<void> {
  await applyNft(netnsPath, replaceScript(tx, opts.replace ?? []), { check: opts.check });
}

/** `nft -j list ruleset` in the netns, parsed. */
export async function listRulesetJson(netnsPath: string): Promise<any> {
  const out = await run(netnsPath, 'list ruleset', false, true);
  return JSON.parse(out);
}

/** Removes these tables from the netns in one transaction; a table that is absent is no error. */
export async function deleteTables(netnsPath: string, tables: readonly TableRef[]): Promise<void> {
  if (tables.length === 0) return;
  await applyNft(netnsPath, wipeScript(tables));
}

/**
 * Calls fn synchronously with the JS thread inside the netns at `netnsPath`, and always returns
 * the thread to its own netns before returning or rethrowing. Use it to create sockets that must
 * live in that netns (a netlink socket, a listener): sockets keep the namespace they were made
 * in. fn must do its work synchronously: anything it starts asynchronously runs after the
 * switch back. (Node creates a TCP socket synchronously in `server.listen(port)` without a host,
 * or `listen({fd})`; not in `net.connect`, which creates it on a later tick.)
 */
export function withNetnsSync<T>(netnsPath: string, fn: () => T): T {
  const native = addon();
  let entered = false;
  try {
    return native.withNetnsSync(netnsPath, () => {
      entered = true;
      return fn();
    });
  } catch (e) {
    if (entered) throw e; // fn's own error, rethrown after the switch back
    const n = e as NativeError;
    throw new NetnsError(n.message, n.code ?? 'EINVAL', netnsPath);
  }
}

export interface OriginalDst {
  readonly address: string;
  readonly port: number;
  readonly family: 'IPv4' | 'IPv6';
}

/**
 * The destination a redirected (NAT REDIRECT) connection was originally sent to, from conntrack
 * (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST). `fd` is a connected socket's descriptor; for a Node
 * net.Socket it is `socket._handle.fd`. Throws (code ENOENT) when the connection has no
 * conntrack entry.
 */
export function getOriginalDst(fd: number): OriginalDst {
  return addon().getOriginalDst(fd);
}

/**
 * A listening TCP socket with IP_TRANSPARENT (IPv4) or IPV6_TRANSPARENT (IPv6, v6-only), as a
 * TPROXY target needs; returns its fd for `net.Server.listen({ fd })`. It is created in the JS
 * thread's current netns: call it inside withNetnsSync for a pod's.
 */
export function createTransparentListenSocket(family: 4 | 6, address: string, port: number, backlog = 511): number {
  return addon().createTransparentListenSocket(family, address, port, backlog);
}

/** The calling thread's network namespace, e.g. "net:[4026531840]". */
export function currentNetnsId(): string {
  return fs.readlinkSync('/proc/thread-self/ns/net');
}
