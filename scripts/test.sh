#!/usr/bin/env bash
# The test command: installs what is missing, runs the whole vitest suite (unit tests and the
# integration tests that build their own network namespaces), and ends with the plain line
# "N passed, M failed" taken from vitest's JSON report. Run as root. The static checks (type check
# of src and test, the linter) run first, once; each one that fails counts as one failure there.
#
#   bash scripts/test.sh [files...]               once (all test files by default)
#   bash scripts/test.sh --repeat N [files...]    N times in a row, stopping at the first failing
#                                                 run; one line per run, then the runs' totals
set -uo pipefail
cd "$(dirname "$0")/.."

repeat=0
if [ "${1:-}" = "--repeat" ]; then
  repeat=${2:-}
  if ! [[ "$repeat" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: bash scripts/test.sh [--repeat N] [test files...]" >&2
    exit 64
  fi
  shift 2
fi

bash scripts/install.sh || exit 1

# A failed static check does not stop the run: vitest's results are still worth seeing.
static_failed=0
for check in typecheck lint; do
  if npm run --silent "$check"; then
    echo "static check $check: passed"
  else
    echo "static check $check: FAILED"
    static_failed=$((static_failed + 1))
  fi
done

report=$(mktemp -t cgw-vitest-XXXXXX.json)
trap 'rm -f "$report"' EXIT

# Prints "passed failed skipped" from the last run's JSON report ("0 1 0" when there is none).
counts() {
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    console.log(r.numPassedTests, r.numFailedTests, (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0));
  ' "$report" 2>/dev/null || echo "0 1 0"
}

summary() { # passed failed skipped
  echo "$1 passed, $2 failed$([ "$3" -gt 0 ] && echo ", $3 skipped")"
}

# One vitest run; its exit code. The JSON report is replaced, so a crashed run reads as failed.
run_vitest() {
  : >"$report"
  npx vitest run --reporter="${1:-default}" --reporter=json --outputFile.json="$report" "${@:2}"
}

if [ "$repeat" -eq 0 ]; then
  run_vitest default "$@"
  rc=$?
  read -r passed failed skipped <<<"$(counts)"
  summary "$passed" "$((failed + static_failed))" "$skipped"
  [ "$static_failed" -eq 0 ] || [ "$rc" -ne 0 ] || rc=1
  exit $rc
fi

# Repeat mode: vitest's own output only for a failing run (its log is printed then).
log=$(mktemp -t cgw-vitest-XXXXXX.log)
trap 'rm -f "$report" "$log"' EXIT
total_passed=0 total_failed=0 total_skipped=0 runs=0 rc=0
t0=$SECONDS
for i in $(seq 1 "$repeat"); do
  t=$SECONDS
  run_vitest dot "$@" >"$log" 2>&1
  rc=$?
  read -r passed failed skipped <<<"$(counts)"
  total_passed=$((total_passed + passed)) total_failed=$((total_failed + failed)) total_skipped=$((total_skipped + skipped))
  runs=$i
  echo "run $i/$repeat: $(summary "$passed" "$failed" "$skipped") in $((SECONDS - t)) s"
  if [ "$rc" -ne 0 ] || [ "$failed" -gt 0 ]; then
    cat "$log"
    echo "run $i failed: stopping"
    [ "$rc" -ne 0 ] || rc=1
    break
  fi
done
echo "$runs run(s) of ${repeat} in $((SECONDS - t0)) s"
summary "$total_passed" "$((total_failed + static_failed))" "$total_skipped"
[ "$static_failed" -eq 0 ] || [ "$rc" -ne 0 ] || rc=1
exit $rc
