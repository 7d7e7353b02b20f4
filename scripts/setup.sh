#!/usr/bin/env bash
# One command for a fresh Debian 12 machine (as root): system packages, npm dependencies,
# build, then the main job end to end: the demo (npm run demo) runs the CNI plugin as a container
# runtime does against a throwaway pod netns and a local API stand-in, shows the rules it applied
# and a connection redirected, cleans up, and exits non-zero unless it prints PASS.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system-deps.sh
npm ci
# npm ci has just built dist/ (prepare), so run what `npm run demo` runs without rebuilding.
exec node dist/src/demo/demo.js
