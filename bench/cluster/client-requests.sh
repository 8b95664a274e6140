#!/usr/bin/env bash
# One client process sending several requests in a row, after each in-process run: the TTFT and TPOT of
# every request, so that a request a client slows down (its second, while it recompiles its per-token
# code with tiered compilation on) shows beside the others (bench/RESULTS.md, issue 17).
# Usage: [CLIENT_TIERED=1] bash bench/cluster/client-requests.sh [MODEL_DIR] [ROUNDS] [REQUESTS]
# (236-token prompt, 64 greedy tokens; CLIENT_TIERED=1 runs the client with the runtime's default tiering,
# as the benchmarks did before; every other process runs with tiering off, as common.sh sets)
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-/tmp/llmcluster-bench/smollm2-135m}
rounds=${2:-4}
requests=${3:-4}
source bench/cluster/common.sh
use_prompt 3
start_cluster
args=(--endpoint "http://127.0.0.1:$port" --prompt "$prompt" --temperature 0 --json --max-tokens 64)
$llmctl generate "${args[@]}" --repeat 2 >/dev/null # the cluster's own first requests
local_json=$(mktemp); cleanup+=("$local_json")
for _ in $(seq "$rounds"); do
  in_process_json "$local_json"
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('in-process prefill median %d ms, mean step %.2f ms; ' % (d['prefill_median_ms'], 1e3 / d['decode_tokens_per_s']), end='')" "$local_json"
  DOTNET_TieredCompilation=${CLIENT_TIERED:-0} $llmctl generate "${args[@]}" --repeat "$requests" |
    python3 -c "import json,sys; r=[json.loads(l) for l in sys.stdin]; print('cluster TTFT ms', [round(x['ttft_seconds'] * 1e3) for x in r], 'TPOT ms', [round(x['tpot_seconds'] * 1e3, 1) for x in r])"
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
