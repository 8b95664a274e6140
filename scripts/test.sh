#!/usr/bin/env bash
# The README's test command: builds and runs every test project, then prints one summary line
# "N passed, N failed, N skipped" computed from the TRX result files, and exits non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/.."
results=TestResults
rm -rf "$results"
if [ -z "${LLMCLUSTER_SHARED:-}" ] && [ -d ../shared ]; then
  export LLMCLUSTER_SHARED="$(cd ../shared && pwd)"
fi
dotnet test Cluster.sln -c Release --logger "trx" --logger "console;verbosity=normal" \
  --results-directory "$results" "$@"
status=$?
python3 scripts/trx_summary.py "$results"
summary=$?
[ $status -eq 0 ] && [ $summary -eq 0 ] || exit 1
