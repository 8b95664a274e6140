#!/usr/bin/env bash
# How much of a cluster request's TPOT is the hand-off: the gap from the first token (the prefill worker's) to the
# second (the decode worker's first step, after the prompt's KV reached it) against the gaps between later
# tokens. TPOT over n tokens counts that gap once: TPOT - (later gaps' mean) is the hand-off's share
# (bench/RESULTS.md, issue 17). From `llmctl generate --json`: ttft_seconds and e2e_seconds (the gateway's clock,
# from the request's arrival), second_token_seconds (the client's, from the call's start; the two clocks start
# within a millisecond or two of each other, which is a few hundredths of a millisecond per later gap).
# Usage: [CORES=dedicated] bash bench/cluster/token-gaps.sh [MODEL_DIR] [REPEATS] [REQUESTS] [MAX_TOKENS]   (REPEATS 3: 236 tokens)
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-/tmp/llmcluster-bench/smollm2-135m}
repeats=${2:-3}
requests=${3:-5}
max_tokens=${4:-64}
source bench/cluster/common.sh
use_prompt "$repeats"
start_cluster
args=(--endpoint "http://127.0.0.1:$port" --prompt "$prompt" --max-tokens "$max_tokens" --ignore-eos --temperature 0 --json)
$client generate "${args[@]}" --repeat 2 >/dev/null
echo "load $(cut -d' ' -f1-3 /proc/loadavg); $requests requests of $max_tokens tokens, prompt of $repeats sentences"
$client generate "${args[@]}" --repeat "$requests" | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    n = len(r["ids"])
    ttft, second, e2e, tpot = r["ttft_seconds"], r["second_token_seconds"], r["e2e_seconds"], r["tpot_seconds"]
    later = (e2e - second) / (n - 2)
    print("TTFT %.0f ms; second token %.1f ms after the first; later gaps %.2f ms on average; TPOT %.2f ms, of it the hand-off %.2f ms (%.1f %%)"
          % (ttft * 1e3, (second - ttft) * 1e3, later * 1e3, tpot * 1e3, (tpot - later) * 1e3, 100 * (tpot - later) / later))'
