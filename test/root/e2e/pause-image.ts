// The sandbox ("pause") image without a registry: a static binary built from pause.c, put in a
// one-layer OCI image and written as an OCI image-layout tarball that `ctr images import` reads.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PACKAGE_ROOT } from '../../support/conformance';

export const PAUSE_SOURCE = path.join(PACKAGE_ROOT, 'test', 'root', 'e2e', 'pause.c');

interface TarEntry {
  name: string;
  /** A directory when absent. */
  data?: Buffer;
  mode: number;
}

/** A ustar archive: 512-byte header per entry, data padded to 512, two zero blocks at the end. */
export function tar(entries: TarEntry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const isDir = e.data === undefined;
    const name = isDir && !e.name.endsWith('/') ? `${e.name}/` : e.name;
    if (Buffer.byteLength(name) > 100) throw new Error(`tar: name too long for this writer: ${name}`);
    const h = Buffer.alloc(512);
    const octal = (v: number, off: number, len: number) => h.write(`${v.toString(8).padStart(len - 1, '0')}\0`, off, len, 'ascii');
    h.write(name, 0, 100, 'utf8');
    octal(e.mode, 100, 8);
    octal(0, 108, 8); // uid
    octal(0, 116, 8); // gid
    octal(isDir ? 0 : e.data!.length, 124, 12);
    octal(0, 136, 12); // mtime: the epoch, so the archive is reproducible
    h.write('        ', 148, 8, 'ascii'); // checksum field counts as spaces while summing
    h.write(isDir ? '5' : '0', 156, 1, 'ascii');
    h.write('ustar\0', 257, 6, 'ascii');
    h.write('00', 263, 2, 'ascii');
    h.write('root', 265, 32, 'ascii');
    h.write('root', 297, 32, 'ascii');
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'ascii');
    blocks.push(h);
    if (!isDir) {
      blocks.push(e.data!);
      const pad = (512 - (e.data!.length % 512)) % 512;
      if (pad) blocks.push(Buffer.alloc(pad));
    }
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/**
 * Builds the image into `dir` and returns the tarball's path. `ref` is the name containerd
 * gives the image on import (the io.containerd.image.name annotation).
 */
export function buildPauseImage(dir: string, ref: string): string {
  fs.mkdirSync(dir, { recursive: true });
  const bin = path.join(dir, 'pause');
  try {
    execFileSync('gcc', ['-static', '-Os', '-s', '-o', bin, PAUSE_SOURCE], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    throw new Error(`cannot build the static pause binary (needs gcc and libc6-dev): ${(e as Error).message}`);
  }
  const layer = tar([{ name: 'pause', data: fs.readFileSync(bin), mode: 0o755 }]);
  const config = Buffer.from(
    JSON.stringify({
      architecture: process.arch === 'x64' ? 'amd64' : process.arch,
      os: 'linux',
      created: '1970-01-01T00:00:00Z',
      config: { Entrypoint: ['/pause'], WorkingDir: '/', Env: ['PATH=/'] },
      rootfs: { type: 'layers', diff_ids: [`sha256:${sha256(layer)}`] },
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${sha256(config)}`, size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${sha256(layer)}`, size: layer.length }],
    }),
  );
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: `sha256:${sha256(manifest)}`,
          size: manifest.length,
          annotations: { 'io.containerd.image.name': ref, 'org.opencontainers.image.ref.name': ref.slice(ref.lastIndexOf(':') + 1) },
        },
      ],
    }),
  );
  const blob = (b: Buffer): TarEntry => ({ name: `blobs/sha256/${sha256(b)}`, data: b, mode: 0o644 });
  const out = path.join(dir, 'pause-oci.tar');
  fs.writeFileSync(
    out,
    tar([
      { name: 'oci-layout', data: Buffer.from('{"imageLayoutVersion":"1.0.0"}'), mode: 0o644 },
      { name: 'index.json', data: index, mode: 0o644 },
      { name: 'blobs', mode: 0o755 },
      { name: 'blobs/sha256', mode: 0o755 },
      blob(layer),
      blob(config),
      blob(manifest),
    ]),
  );
  return out;
}
