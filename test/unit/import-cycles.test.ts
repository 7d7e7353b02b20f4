// No import cycles among src/**/*.ts. A cycle makes load order decide which module sees the
// other half-initialised (undefined exports at import time), and it ties layers together that
// ARCHITECTURE.md keeps apart. Type-only imports count too: they are the first step to a value one.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ts from 'typescript';

const repo = path.resolve(__dirname, '../../..');
const srcRoot = path.join(repo, 'src');

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...sourceFiles(p));
    else if (p.endsWith('.ts') && !p.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** The file a relative specifier names, as tsc's node resolution finds it; undefined for packages. */
function resolveRelative(from: string, spec: string): string | undefined {
  if (!spec.startsWith('.')) return undefined;
  const base = path.resolve(path.dirname(from), spec);
  for (const c of [base + '.ts', path.join(base, 'index.ts'), base.replace(/\.js$/, '.ts')]) {
    if (fs.existsSync(c) && fs.statSync(c).isFile()) return c;
  }
  throw new Error(`${path.relative(repo, from)}: import '${spec}' resolves to no .ts file`);
}

/** Edges from each file to the files it imports: static, type-only, re-exports, import() and require(). */
function importGraph(files: string[]): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const f of files) {
    // preProcessFile is tsc's own import scanner: it skips comments and strings, which a regex does not.
    const info = ts.preProcessFile(fs.readFileSync(f, 'utf8'), true, true);
    const deps = new Set<string>();
    for (const ref of info.importedFiles) {
      const r = resolveRelative(f, ref.fileName);
      if (r) deps.add(r);
    }
    graph.set(f, [...deps].sort());
  }
  return graph;
}

/** Every cycle, one per strongly connected component (Tarjan), each as a closed path a -> b -> a. */
function findCycles(graph: Map<string, string[]>): string[][] {
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const components: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter);
    counter++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const c: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        c.push(w);
      } while (w !== v);
      if (c.length > 1 || (graph.get(v) ?? []).includes(v)) components.push(c);
    }
  };
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) visit(v);
  // Name each component by its shortest cycle through its first file (BFS inside the component).
  return components.map((c) => {
    const inside = new Set(c);
    const start = [...c].sort()[0];
    const prev = new Map<string, string>();
    const queue = [start];
    while (queue.length) {
      const v = queue.shift()!;
      for (const w of graph.get(v) ?? []) {
        if (!inside.has(w)) continue;
        if (w === start) {
          const pathBack = [v];
          while (pathBack[0] !== start) pathBack.unshift(prev.get(pathBack[0])!);
          return [...pathBack, start];
        }
        if (!prev.has(w)) {
          prev.set(w, v);
          queue.push(w);
        }
      }
    }
    return [...c, c[0]];
  });
}

test('the cycle finder names a cycle and ignores a diamond', () => {
  const g = new Map([
    ['a', ['b', 'c']],
    ['b', ['d']],
    ['c', ['d']],
    ['d', []],
    ['x', ['y']],
    ['y', ['z']],
    ['z', ['x']],
  ]);
  assert.deepEqual(findCycles(g), [['x', 'y', 'z', 'x']]);
  assert.deepEqual(findCycles(new Map([['s', ['s']]])), [['s', 's']]);
});

test('the import scanner sees type-only imports, re-exports, import() and require(), not comments', () => {
  const got = ts
    .preProcessFile(
      [
        "import type { A } from './a';",
        "export { B } from './b';",
        "const c = import('./c');",
        "const d = require('./d');",
        "// import { E } from './e';",
        'const s = "import { F } from \'./f\'";',
      ].join('\n'),
      true,
      true,
    )
    .importedFiles.map((r) => r.fileName);
  assert.deepEqual(got.sort(), ['./a', './b', './c', './d']);
});

test('src/ has no import cycles (value and type imports)', () => {
  const files = sourceFiles(srcRoot);
  assert.ok(files.length > 50, `expected the project's sources under ${srcRoot}, found ${files.length} files`);
  const cycles = findCycles(importGraph(files)).map((c) => c.map((f) => path.relative(repo, f)).join(' -> '));
  assert.deepEqual(cycles, [], `import cycles:\n  ${cycles.join('\n  ')}`);
});
