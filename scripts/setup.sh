#!/usr/bin/env bash
# One command for a fresh Debian 12 machine (as root): system packages, npm dependencies,
# build, then the main job on a built-in default: the rules a standard istio-init applies.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system-deps.sh
npm ci
exec node bin/istio-cni-ts.js rules --dry-run \
  -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x '' -b '*' -d 15090,15021,15020
