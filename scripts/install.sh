#!/usr/bin/env bash
# Installs what cgw-sync and its tests need on a Debian machine, then the npm dependencies
# (`npm ci` also compiles the TypeScript through the `prepare` script). Idempotent; run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

# openssh-server: the SSH source test runs its own sshd on 127.0.0.1 (never the system's service);
# lintian checks the Debian package (dpkg-deb builds it); systemd provides systemd-analyze.
PACKAGES=(nftables iproute2 git qemu-system-x86 conntrackd conntrack tcpdump socat curl iputils-ping arping ndisc6 libndp-tools procps ca-certificates gpg gpgconf mount openssh-server openssh-client lintian systemd apt dpkg libc-bin)
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
# sshd is only a tool here too: when this run installed openssh-server, keep its service off.
if [[ " ${missing[*]} " == *" openssh-server "* ]] && command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet ssh 2>/dev/null; then
  systemctl disable --now ssh >/dev/null 2>&1 || true
fi
# conntrackd is only a tool here: keep the package's own service from running on the host.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet conntrackd 2>/dev/null; then
  systemctl disable --now conntrackd >/dev/null 2>&1 || true
fi

# engines in package.json: >= 20.5 (Debian 12's own nodejs is 18.20.4; see the README's install section).
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 5) ? 0 : 1)' 2>/dev/null; then
  echo "cgw-sync needs Node.js >= 20.5 (found: $(node --version 2>/dev/null || echo none)), the README section Install on a node says where to get it" >&2
  exit 1
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm run --silent build
fi
