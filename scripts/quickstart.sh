#!/usr/bin/env bash
# The main job on the bundled state-example/: install, validate the state, and show the plan
# node1 would apply. The plan runs in a throwaway network namespace (unshare -n), so it shows
# node1's rules against an empty node and never reads or writes this host's ruleset.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
CGW="node dist/cli/bin.js"
echo "== cgw-sync validate --state state-example"
$CGW validate --state state-example
echo
echo "== cgw-sync plan --state state-example --node node1   (in a fresh network namespace)"
rc=0
unshare -n $CGW plan --state state-example --node node1 || rc=$?
# Exit code 2 means "changes pending", which is what an empty node has.
[ "$rc" -eq 0 ] || [ "$rc" -eq 2 ]
