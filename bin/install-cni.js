#!/usr/bin/env node
'use strict';
// The node agent under the name Istio's chart runs it (`command: ["install-cni"]`).
const { main } = require('../dist/src/main.js');
main(process.argv.slice(2), 'install-cni').then((code) => {
  process.exitCode = code;
});
