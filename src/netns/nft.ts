// The typed surface over the native addon: nftables transactions applied inside a network
// namespace by libnftables (each call on its own short-lived pthread, never on the JS thread or
// a libuv pool thread), a synchronous "run this with the JS thread in that netns" for creating
// sockets there, and the two socket helpers redirect tests and `init --run-validation` need.
import * as fs from 'node:fs';
import { NftJsonRuleset } from '../nft/json';
import { LISTING_SCRIPT, NftState, RULESET_SCRIPT, parseListing, planRemove, planReplace } from '../nft/plan';
import { TableRef, Transaction, render, tablesOf } from '../nft/transaction';
import { addon } from './addon';
import { NetnsError, NftError } from './errors';
import { NetnsHandle, NetnsOpenError, NetnsRef } from './handle';

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

export { NftError, NetnsError, isNetnsFault } from './errors';

/**
 * Where an nft call runs: a netns path (opened by the call), or a handle the caller holds
 * (nothing is opened again; messages name the handle's source).
 */
export type NetnsTarget = string | NetnsRef;

const pathOf = (t: NetnsTarget) => (typeof t === 'string' ? t : t.path);
const shownOf = (t: NetnsTarget) => (typeof t === 'string' ? t : t.source);

interface NativeError extends Error {
  code?: string;
  nftError?: string;
  nftStage?: 'list' | 'apply';
}

/** The script's output, or (with ifAbsent given, when one of those tables exists) the listing. */
type RunResult = { applied: true; output: string } | { applied: false; listing: string };

/** A table as the addon's ifAbsent and ifPresent name it: "family name", as `nft list tables` prints it. */
const tableKey = (t: TableRef) => `${t.family} ${t.table}`;

type NativeOpts = Parameters<ReturnType<typeof addon>['nftRun']>[4];

/** nftRun, its failure as an NftError naming `shownAs` (the path the caller gave) and `script`. */
async function nativeJob(netnsPath: string, script: string, dryRun: boolean, json: boolean, shownAs: string, opts?: NativeOpts, shownScript = script) {
  try {
    return await addon().nftRun(netnsPath, script, dryRun, json, opts);
  } catch (e) {
    const n = e as NativeError;
    // Through a handle the addon names /proc/self/fd/N; the caller knows the path it gave.
    const message = shownAs === netnsPath ? n.message : n.message.split(netnsPath).join(shownAs);
    throw new NftError(message, n.code ?? 'ENFT', shownAs, shownScript, n.nftError ?? '', n.nftStage ?? 'apply');
  }
}

/**
 * One job of the addon. `readOnly`: the script lists and changes nothing (or, with ifAbsent,
 * changes only a netns without those tables); such a job may run on the JS thread (nftRun's
 * opts.inline): its socket's close waits for no grace period, and it skips the thread hand-offs
 * that cost a fresh pod's ADD more than its apply.
 */
async function runJob(
  netnsPath: string,
  script: string,
  dryRun: boolean,
  json: boolean,
  shownAs: string,
  ifAbsent?: readonly TableRef[],
  readOnly = false,
): Promise<RunResult> {
  const inline = readOnly || ifAbsent !== undefined;
  const r = await nativeJob(netnsPath, script, dryRun, json, shownAs, { ...(ifAbsent && { ifAbsent: ifAbsent.map(tableKey) }), ...(inline && { inline }) });
  // An addon built before opts existed ignores them and runs the script: say so, rather than
  // plan from an empty "listing" and send the script a second time.
  if (typeof r.applied !== 'boolean') throw new Error('the native addon predates nftRun(..., {ifAbsent}): rebuild it (npm run install)');
  return r.applied ? { applied: true, output: r.output } : { applied: false, listing: r.listing ?? '' };
}

async function run(netnsPath: string, script: string, dryRun: boolean, json: boolean, shownAs = netnsPath, readOnly = false): Promise<string> {
  const r = await runJob(netnsPath, script, dryRun, json, shownAs, undefined, readOnly);
  return r.applied ? r.output : '';
}

/** Runs an nft script in the netns as one transaction: all of it applies, or none. */
export async function applyNft(netns: NetnsTarget, script: string, opts: ApplyOptions = {}): Promise<void> {
  await run(pathOf(netns), script, opts.check ?? false, false, shownOf(netns));
}

/** A failure to list (or open, or enter) the netns, worded and staged as a listing's. */
function listFault(n: NftError, shownAs: string): NftError {
  return new NftError(`listing nft tables in ${shownAs}: ${n.message}`, n.code, shownAs, n.script, n.stderr, 'list');
}

/** The tables in the netns with their chains (`nft -j list tables; list chains`, ~0.4 ms). */
export async function listNftState(netns: NetnsTarget, shownAs = shownOf(netns)): Promise<NftState> {
  let out: string;
  try {
    out = await run(pathOf(netns), LISTING_SCRIPT, false, true, shownAs, true);
  } catch (e) {
    throw listFault(e as NftError, shownAs);
  }
  return parseListing(out);
}

// Applies to one netns run one after another within this process, so two plans (a re-ADD while
// repair runs) never race on the same listing. Keyed by the namespace's inode, so two paths to
// one netns (a bind mount and /proc/PID/fd/N) share a turn.
const turns = new Map<string, Promise<unknown>>();

function inTurn<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const before = turns.get(key) ?? Promise.resolve();
  const mine = before.then(fn, fn);
  const settled = mine.then(
    () => undefined,
    () => undefined,
  );
  turns.set(key, settled);
  void settled.then(() => {
    if (turns.get(key) === settled) turns.delete(key);
  });
  return mine;
}

/** Opens the netns once for a listing and the apply after it; open errors as the addon words them. */
function openNetns(netnsPath: string): NetnsHandle {
  try {
    return NetnsHandle.openForRequest(netnsPath);
  } catch (e) {
    if (!(e instanceof NetnsOpenError)) throw e;
    throw new NftError(e.message, e.code, netnsPath, '', '', 'list');
  }
}

const sameState = (a: NftState | Transaction, b: NftState | Transaction) => JSON.stringify(a) === JSON.stringify(b);

/**
 * Makes every table `tx` touches, and every table in opts.replace, exactly what `tx` builds, in
 * one atomic transaction: on failure the netns keeps its previous ruleset. Only what is stale is
 * deleted (planReplace), so a fresh netns gets render(tx) alone and no kernel grace period. That
 * plan is sent first, in one nft job that runs it only if none of those tables exists (a fresh
 * pod netns: the whole apply is that one job); else the job answers with the netns' listing, the
 * plan is made from it and sent as a second job. Every job reaches the same namespace even if its
 * path is removed meanwhile: a path is opened once for the call, a handle is used as it is. If a
 * transaction fails and a new listing differs from the state it was planned on (another process
 * changed the netns meanwhile), it is planned and sent once more. Resolves to the transaction
 * that was sent (empty when there was nothing to do).
 */
export async function applyTransaction(netns: NetnsTarget, tx: Transaction, opts: TransactionOptions = {}): Promise<Transaction> {
  if (typeof netns !== 'string') return applyIn(netns, tx, opts);
  const ns = openNetns(netns);
  try {
    return await applyIn(ns, tx, opts);
  } finally {
    ns.release();
  }
}

function applyIn(ns: NetnsRef, tx: Transaction, opts: TransactionOptions): Promise<Transaction> {
  const netnsPath = ns.source;
  const check = opts.check ?? false;
  const owned = opts.replace ?? [];
  return inTurn(String(ns.ino), async () => {
    let state: NftState = [];
    let retried = false;
    const fresh = planReplace(tx, owned, state);
    if (fresh.length === 0) {
      state = await listNftState(ns.path, netnsPath);
    } else {
      // planReplace reads only the listed tables that are owned or that tx touches: with none
      // of them there, `fresh` is the plan for whatever else the netns holds.
      const script = render(fresh);
      try {
        const r = await runJob(ns.path, script, check, false, netnsPath, [...owned, ...tablesOf(tx)]);
        if (r.applied) return fresh;
        state = parseListing(r.listing);
      } catch (e) {
        if ((e as NftError).code !== 'ENFT' || (e as NftError).stage === 'list') throw listFault(e as NftError, netnsPath);
        const now = await listNftState(ns.path, netnsPath);
        if (sameState(planReplace(tx, owned, now), fresh)) throw e;
        state = now;
        retried = true;
      }
    }
    for (let attempt = retried ? 2 : 1; ; attempt++) {
      const plan = planReplace(tx, owned, state);
      if (plan.length === 0) return plan;
      try {
        await run(ns.path, render(plan), check, false, netnsPath);
        return plan;
      } catch (e) {
        if (attempt > 1 || (e as NftError).code !== 'ENFT') throw e;
        const now = await listNftState(ns.path, netnsPath);
        if (sameState(now, state)) throw e;
        state = now;
      }
    }
  });
}

/** `nft -j list ruleset` in the netns, parsed. */
export async function listRulesetJson(netns: NetnsTarget): Promise<NftJsonRuleset> {
  const out = await run(pathOf(netns), RULESET_SCRIPT, false, true, shownOf(netns), true);
  return JSON.parse(out) as NftJsonRuleset;
}

/**
 * Removes these tables from the netns in one transaction, deleting only those that exist: one
 * nft job lists the tables and runs the removal of each one listed (planRemove's text, one piece
 * per table), so a DEL costs one job, and nothing there is no error and costs no grace period.
 * Resolves to the transaction that ran. In turn with applyTransaction on the same netns.
 */
export async function deleteTables(netns: NetnsTarget, tables: readonly TableRef[]): Promise<Transaction> {
  if (tables.length === 0) return [];
  const ns = typeof netns === 'string' ? openNetns(netns) : netns;
  const shownAs = ns.source;
  // Each piece as planRemove words the removal of that table when it is there.
  const pieces = tables.map((t) => ({ table: tableKey(t), script: render(planRemove([t], [{ family: t.family, table: t.table, chains: [] }])) }));
  try {
    return await inTurn(String(ns.ino), async () => {
      let r: Awaited<ReturnType<typeof nativeJob>>;
      try {
        r = await nativeJob(ns.path, '', false, false, shownAs, { ifPresent: pieces }, pieces.map((p) => p.script).join(''));
      } catch (e) {
        const err = e as NftError;
        // As applyTransaction words it: a netns that could not be entered or listed is a listing's fault.
        throw err.stage === 'list' || err.code !== 'ENFT' ? listFault(err, shownAs) : err;
      }
      if (!Array.isArray(r.ran)) throw new Error('the native addon predates nftRun(..., {ifPresent}): rebuild it (npm run install)');
      const ran = new Set(r.ran);
      const gone = tables.filter((t) => ran.has(tableKey(t)));
      return planRemove(
        gone,
        gone.map((t) => ({ family: t.family, table: t.table, chains: [] })),
      );
    });
  } finally {
    if (ns !== netns) (ns as NetnsHandle).release();
  }
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
