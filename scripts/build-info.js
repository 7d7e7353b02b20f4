#!/usr/bin/env node
// Writes dist/build-info.json: the package version, the git revision and whether the tree had
// local changes, for the agent's start-up line ("CNI version: ..."), as Istio stamps its binaries.
// Outside a git checkout the revision is "unknown".
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const git = (...args) => {
  try {
    return execFileSync('git', ['-C', root, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return undefined;
  }
};
const revision = git('rev-parse', 'HEAD');
const dirty = revision === undefined ? undefined : git('status', '--porcelain', '--untracked-files=no');
const info = {
  version: JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version,
  gitRevision: revision ?? 'unknown',
  buildStatus: dirty === undefined ? 'unknown' : dirty === '' ? 'Clean' : 'Modified',
};
fs.mkdirSync(path.join(root, 'dist'), { recursive: true });
fs.writeFileSync(path.join(root, 'dist', 'build-info.json'), `${JSON.stringify(info)}\n`);
