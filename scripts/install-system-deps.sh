#!/usr/bin/env bash
# Installs the Debian packages istio-cni-ts needs to build and test, when missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(libnftables-dev nftables iproute2 util-linux python3 make g++ pkg-config ca-certificates
  # test/root/e2e: a private containerd (CRI plugin) runs the CNI chain; gcc + libc6-dev build its static pause binary
  containerd runc containernetworking-plugins gcc libc6-dev
  # the CNI shim is linked statically against musl (binding.gyp): a static glibc start-up costs ~0.7 ms per exec in a VM
  musl-tools
  # npm run package / npm run image (docs/payload.md, docs/image.md): patchelf removes RUNPATHs,
  # binutils strips and objdump checks symbol versions, tar and gzip pack the image; the payload
  # test builds minimal Debian roots with debootstrap; bench/cni-add.ts times Go's loopback
  patchelf binutils tar gzip debootstrap)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
