#!/usr/bin/env bash
# Issue 21 benchmark: seeded malformed requests against the gateway's gRPC and HTTP front doors
# (`llmctl bench fuzz`, which starts its own cluster on ports 4400 above the defaults). Prints the report
# and, with the load average before and after, what bench/RESULTS.md records.
# Usage: bash bench/fuzz/run.sh [REQUESTS] [SEED]   (default: 100000, seed 1)
set -euo pipefail
cd "$(dirname "$0")/../.."
requests=${1:-100000}
seed=${2:-1}
dotnet build tools/llmctl -c Release -v q -nologo >/dev/null
echo "uptime before: $(uptime)"
start=$(date +%s)
status=0
dotnet tools/llmctl/bin/Release/net10.0/llmctl.dll bench fuzz --requests "$requests" --seed "$seed" || status=$?
echo "uptime after: $(uptime); $(( $(date +%s) - start )) s in all (cluster start, warm-up, run, settle)"
exit $status
