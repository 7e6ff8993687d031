#!/usr/bin/env bash
# The test command: installs what is missing, runs the whole vitest suite (unit tests and the
# integration tests that build their own network namespaces), and ends with the plain line
# "N passed, M failed" taken from vitest's JSON report. Run as root.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh || exit 1

report=$(mktemp -t cgw-vitest-XXXXXX.json)
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@"
rc=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const skipped = (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed` + (skipped ? `, ${skipped} skipped` : ""));
' "$report" || echo "0 passed, 1 failed"
rm -f "$report"
exit $rc
