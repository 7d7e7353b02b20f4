// File operations the installer needs on shared host directories. Every file we write appears
// whole or not at all: it is written to a temporary file in the same directory, flushed to disk,
// then renamed over the target (rename(2) is atomic within a filesystem), and the directory entry
// is flushed too. A reader (kubelet, containerd, another CNI's agent) never sees a partial file.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';

/** Like Go's file.Exists: only "does not exist" counts as absent (a permission error does not). */
export function exists(p: string): boolean {
  try {
    fs.statSync(p);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ENOENT' && (e as NodeJS.ErrnoException).code !== 'ENOTDIR';
  }
}

export function tempNameFor(target: string): string {
  return `${target}.tmp.${crypto.randomBytes(6).toString('hex')}`;
}

async function fsyncDir(dir: string): Promise<void> {
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    await fh.sync();
  } catch {
    // Some filesystems refuse fsync on a directory; the rename itself is still atomic.
  } finally {
    await fh?.close();
  }
}

/**
 * The error of a failed write with the file it was for: Node's own ("ENOSPC: no space left on
 * device, write") names neither. Code, errno and syscall are kept for callers that test them.
 */
function namedError(e: unknown, what: string): Error {
  if (!(e instanceof Error)) return new Error(`${what}: ${String(e)}`);
  const src = e as NodeJS.ErrnoException;
  const err = new Error(`${what}: ${src.message}`, { cause: e }) as NodeJS.ErrnoException;
  if (src.code !== undefined) err.code = src.code;
  if (src.errno !== undefined) err.errno = src.errno;
  if (src.syscall !== undefined) err.syscall = src.syscall;
  return err;
}

/** The file a write was derived from changed before the write could land; nothing was written. */
export class StaleSourceError extends Error {
  override name = 'StaleSourceError';
  constructor(readonly target: string) {
    super(`${target} changed while we prepared our version of it`);
  }
}

/** What identifies one version of a file: a rename or rewrite changes at least one of these. */
export async function fileVersion(p: string): Promise<string> {
  const st = await fsp.stat(p, { bigint: true });
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

/**
 * Writes `data` to `target` atomically with permission bits `mode` (applied with chmod, so the
 * umask does not narrow it). On any failure (a full disk: ENOSPC) the temporary file is removed,
 * `target` is untouched, and the error names `target`. With `stillCurrent`, the rename happens
 * only if it still says yes after the data is on disk (else StaleSourceError, nothing written).
 */
export async function atomicWrite(target: string, data: string | Uint8Array, mode: number, stillCurrent?: () => Promise<boolean>): Promise<void> {
  const tmp = tempNameFor(target);
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    await fh.chmod(mode & 0o7777);
    await fh.writeFile(data);
    await fh.sync();
    await fh.close();
    fh = undefined;
    // Last moment before the rename: the data may have been derived from a file someone else
    // has since replaced (the slow fsync is behind us, so the window left is tiny).
    if (stillCurrent && !(await stillCurrent())) throw new StaleSourceError(target);
    await fsp.rename(tmp, target);
  } catch (e) {
    await fh?.close().catch(() => undefined);
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    if (e instanceof StaleSourceError) throw e;
    throw namedError(e, `write ${target}`);
  }
  await fsyncDir(path.dirname(target));
}

/** Copies `src` to `targetDir/name` atomically, keeping the source's permission bits. */
export async function atomicCopy(src: string, targetDir: string, name: string): Promise<void> {
  const st = await fsp.stat(src);
  const target = path.join(targetDir, name);
  const tmp = tempNameFor(target);
  try {
    await fsp.copyFile(src, tmp, fs.constants.COPYFILE_EXCL);
    await fsp.chmod(tmp, st.mode & 0o7777);
    const fh = await fsp.open(tmp, fs.constants.O_RDONLY);
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, target);
  } catch (e) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw namedError(e, `copy ${src} to ${target}`);
  }
  await fsyncDir(targetDir);
}

/** True when both files exist with the same permission bits and the same bytes. */
export async function sameFile(a: string, b: string): Promise<boolean> {
  let sa: fs.Stats, sb: fs.Stats;
  try {
    [sa, sb] = await Promise.all([fsp.stat(a), fsp.stat(b)]);
  } catch {
    return false;
  }
  if (!sa.isFile() || !sb.isFile() || sa.size !== sb.size || (sa.mode & 0o7777) !== (sb.mode & 0o7777)) return false;
  const [fa, fb] = await Promise.all([fsp.open(a, 'r'), fsp.open(b, 'r')]);
  try {
    const size = 1 << 20;
    const ba = Buffer.alloc(size);
    const bb = Buffer.alloc(size);
    for (let pos = 0; pos < sa.size; pos += size) {
      const [ra, rb] = await Promise.all([fa.read(ba, 0, size, pos), fb.read(bb, 0, size, pos)]);
      if (ra.bytesRead !== rb.bytesRead || ba.compare(bb, 0, rb.bytesRead, 0, ra.bytesRead) !== 0) return false;
      if (ra.bytesRead === 0) break;
    }
    return true;
  } finally {
    await Promise.all([fa.close(), fb.close()]);
  }
}
