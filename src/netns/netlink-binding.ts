// Where netlink's native binding comes from in the self-contained plugin: install/package.js
// replaces the netlink package's binding lookup (node-gyp-build) by a load of this path, which
// src/plugin/standalone.ts sets to the copy beside the executable. Under node it is unused.

let file: string | undefined;

export function useNetlinkBindingAt(f: string): void {
  file = f;
}

export function netlinkBindingPath(): string {
  if (file === undefined) throw new Error('netlink binding: no path set (useNetlinkBindingAt is called by the plugin entry)');
  return file;
}
