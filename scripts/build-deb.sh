#!/usr/bin/env bash
# Builds the Debian package cgw-sync_<version>_all.deb from this checkout (`npm run deb` compiles
# first). Needs only dpkg-deb; no network: the production dependencies are copied from
# node_modules (the ones `npm ls --omit=dev` names), so the package holds exactly what runs.
#
#   /usr/lib/cgw-sync/            dist/, node_modules/ (production), schema/, state-example/, hooks/, package.json
#   /usr/bin/cgw-sync             launcher (node /usr/lib/cgw-sync/dist/cli/bin.js)
#   /lib/systemd/system/          cgw-sync.service, cgw-sync-once.service, cgw-sync.timer (not enabled)
#   /etc/cgw-sync/agent.example.yaml   conffile; the node's own config is /etc/cgw-sync/agent.yaml
#   /usr/share/doc/cgw-sync/      README.md, docs/, copyright, changelog.gz
#
# Usage: scripts/build-deb.sh [--out DIR]   (default DIR: build/); prints the .deb's path.
set -euo pipefail
cd "$(dirname "$0")/.."

out=build
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    *) echo "build-deb: unknown option $1" >&2; exit 1 ;;
  esac
done
[ -f dist/cli/bin.js ] || { echo "build-deb: dist/ is missing; run npm run build first" >&2; exit 1; }

version=$(node -p 'require("./package.json").version')
description=$(node -p 'require("./package.json").description')
maintainer=${DEB_MAINTAINER:-"cgw-sync maintainers <cgw-sync@example.org>"}
mkdir -p "$out"
stage=$(mktemp -d "${TMPDIR:-/tmp}/cgw-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT

lib=$stage/usr/lib/cgw-sync
doc=$stage/usr/share/doc/cgw-sync
install -d "$lib" "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/etc/cgw-sync" "$doc" "$stage/DEBIAN"

# The program: compiled code without the benchmark, the schemas its validator loads, the example.
cp -r dist schema state-example hooks package.json "$lib/"
# Source maps point at src/, which is not shipped.
rm -rf "$lib/dist/bench"
find "$lib/dist" -name '*.map' -delete
# Production dependencies only, at the paths npm resolved them to.
mapfile -t modules < <(npm ls --omit=dev --all --parseable 2>/dev/null | tail -n +2)
for dir in "${modules[@]}"; do
  rel=${dir#"$PWD"/}
  mkdir -p "$lib/$(dirname "$rel")"
  cp -r "$dir" "$lib/$rel"
done
# Files npm keeps for development only.
find "$lib/node_modules" \( -name '*.map' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '.npmignore' -o -name '.eslintrc*' \) -type f -delete
find "$lib/node_modules" -name '.bin' -prune -exec rm -rf {} +
# Browser bundles Node never loads (package.json "exports": node resolves dist/node/ and index.js).
rm -rf "$lib/node_modules/openpgp/dist/lightweight" "$lib"/node_modules/openpgp/dist/openpgp.* "$lib/node_modules/isomorphic-git/index.umd.min.js"
find "$lib/node_modules" -name '.git*' -type f -delete

# The launcher resolves the program next to itself, so an unpacked copy (dpkg-deb -x) runs too.
cat >"$stage/usr/bin/cgw-sync" <<'EOF'
#!/bin/sh
# cgw-sync: the program lives in /usr/lib/cgw-sync (Debian package).
here=$(dirname "$(readlink -f "$0")")
exec node "$here/../lib/cgw-sync/dist/cli/bin.js" "$@"
EOF
chmod 0755 "$stage/usr/bin/cgw-sync" "$lib/dist/cli/bin.js"

install -m 0644 systemd/cgw-sync.service systemd/cgw-sync-once.service systemd/cgw-sync.timer "$stage/lib/systemd/system/"
install -m 0644 systemd/agent.example.yaml "$stage/etc/cgw-sync/agent.example.yaml"

cp -r README.md docs "$doc/"
# Native package: the changelog is the package's version history, kept minimal and reproducible.
date=$(git log -1 --format=%aD 2>/dev/null || date -R)
printf 'cgw-sync (%s) unstable; urgency=medium\n\n  * Release %s.\n\n -- %s  %s\n' "$version" "$version" "$maintainer" "$date" | gzip -9n >"$doc/changelog.gz"
{
  printf 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: cgw-sync\n\n'
  printf 'Files: *\nCopyright: 2026 The cgw-sync authors\nLicense: Apache-2.0\n\n'
  printf 'Files: usr/lib/cgw-sync/node_modules/*\nCopyright: the authors of each module\nLicense: other\n Each bundled module under the license its package.json declares (its license file ships with it):\n'
  printf '%s\n' "${modules[@]}" | node -e '
    for (const dir of require("fs").readFileSync(0, "utf8").split("\n").filter(Boolean)) {
      const p = require(`${dir}/package.json`);
      console.log(` ${p.name} ${p.version}: ${typeof p.license === "string" ? p.license : JSON.stringify(p.license)}`);
    }'
  printf '\n'
  printf 'License: Apache-2.0\n On Debian systems, the complete text of the Apache License, Version 2.0\n can be found in "/usr/share/common-licenses/Apache-2.0".\n'
} >"$doc/copyright"

find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -type f ! -perm -u+x -exec chmod 0644 {} +
find "$stage" -type f -perm -u+x -exec chmod 0755 {} +

echo /etc/cgw-sync/agent.example.yaml >"$stage/DEBIAN/conffiles"
chmod 0644 "$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
long_description=' Each node fetches the YAML state of the cluster from Git over HTTPS or SSH,
 renders its own nftables ruleset, applies it in one atomic transaction,
 starts and stops its guests, and commits a status report to a branch.'
cat >"$stage/DEBIAN/control" <<EOF
Package: cgw-sync
Version: $version
Architecture: all
Maintainer: $maintainer
Installed-Size: $size
Depends: nodejs (>= 20.5), nftables, iproute2, git, ca-certificates
Recommends: openssh-client, arping, libndp-tools
Suggests: qemu-system-x86, conntrackd, xen-utils
Section: admin
Priority: optional
Description: GitOps reconciler for convergent-gateway hypervisor nodes
 ${description#*: }.
 .
$long_description
EOF

deb="$out/cgw-sync_${version}_all.deb"
dpkg-deb --build --root-owner-group -Zgzip "$stage" "$deb" >/dev/null
echo "$deb"
