#!/usr/bin/env bash
# Installs what cgw-sync and its tests need on a Debian machine, then the npm dependencies
# (`npm ci` also compiles the TypeScript through the `prepare` script). Idempotent; run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(nftables iproute2 git qemu-system-x86 conntrackd conntrack tcpdump socat curl iputils-ping arping procps ca-certificates gpg gpgconf mount apt dpkg libc-bin)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# conntrackd is only a tool here: keep the package's own service from running on the host.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet conntrackd 2>/dev/null; then
  systemctl disable --now conntrackd >/dev/null 2>&1 || true
fi

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "cgw-sync needs Node.js >= 20 (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm run --silent build
fi
