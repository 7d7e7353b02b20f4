#!/usr/bin/env node
// Runs every compiled test file under dist/test with Node's test runner.
// Node 20's --test does not expand globs, so the files are listed here.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.join(__dirname, '..', 'dist', 'test');
const only = process.argv.slice(2); // optional sub-directories, e.g. "unit conformance"

function walk(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? walk(p) : e.name.endsWith('.test.js') ? [p] : [];
  });
}

const dirs = only.length ? only.map((d) => path.join(root, d)) : [root];
const files = dirs.flatMap(walk).sort();
if (files.length === 0) {
  console.error(`no test files under ${dirs.join(', ')}: run the build first`);
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=2', ...files], { stdio: 'inherit' });
process.exit(r.status ?? 1);
