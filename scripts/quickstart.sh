#!/usr/bin/env bash
# The main job, on the bundled state-example/: install, validate the state, then bring up the lab
# (two nodes, a client and two guests in network namespaces, a Git server on 127.0.0.1 holding
# the state, one agent per node applying it) and probe it. Everything lives in network namespaces
# named cgwlab-*; this host's own ruleset, links and routes are never touched. The lab keeps
# running afterwards; `lab down` removes it. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
CGW="node dist/cli/bin.js"
echo "== cgw-sync validate --state state-example"
$CGW validate --state state-example
echo
echo "== cgw-sync lab up"
$CGW lab up
echo
echo "== cgw-sync lab check"
rc=0
$CGW lab check || rc=$?
echo
echo "The lab keeps running (in this checkout, cgw-sync is \`$CGW\`)."
echo "Play with it as the summary above shows; remove it with:  $CGW lab down"
exit $rc
