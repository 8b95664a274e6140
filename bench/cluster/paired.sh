#!/usr/bin/env bash
# Issue 17's ratios measured in pairs: the in-process engine and the cluster take turns, L C L C ... L,
# and each cluster request is compared with the mean of the in-process runs just before and just after
# it. On a shared machine whose speed drifts by tens of percent within a minute, run.sh's single
# before/after reference can sit in a different phase than the requests it is compared with; here each
# comparison spans about ten seconds.
# Usage: [CORES=dedicated] bash bench/cluster/paired.sh [MODEL_DIR] [PAIRS] [REPEATS]   (REPEATS as run.sh's: 3 gives 236
# prompt tokens, 23 about 1,800)
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-/tmp/llmcluster-bench/smollm2-135m}
pairs=${2:-5}
repeats=${3:-3}
source bench/cluster/common.sh
use_prompt "$repeats"

work=$(mktemp -d); cleanup=("$work")
start_cluster
args=(--endpoint "http://127.0.0.1:$port" --prompt "$prompt" --max-tokens 64 --temperature 0 --json)
$client generate "${args[@]}" >/dev/null   # the cluster's own first request (connections, JIT)

in_process_json "$work/local-0.json"
for i in $(seq 1 "$pairs"); do
  # Each client process's first request compiles its per-token code (at full optimization: common.sh): only its second is kept.
  $client generate "${args[@]}" --repeat 2 | tail -n 1 >"$work/cluster-$i.json"
  in_process_json "$work/local-$i.json"
done
echo "== $pairs cluster requests of $prompt_tokens prompt tokens and 64 greedy tokens, each against the mean of the in-process runs before and after it, cores $CORES (load $(cut -d' ' -f1-3 /proc/loadavg))"
python3 - "$work" "$pairs" <<'PY'
import json, statistics as st, sys
work, pairs = sys.argv[1], int(sys.argv[2])
local = [json.load(open(f"{work}/local-{i}.json")) for i in range(pairs + 1)]
rows = []
print("| pair | TTFT ms | x median prefill | x best | TPOT ms | x mean step | x median step | second token - TTFT ms |")
print("|---|---|---|---|---|---|---|---|")
for i in range(1, pairs + 1):
    c = json.load(open(f"{work}/cluster-{i}.json"))
    a, b = local[i - 1], local[i]
    median = (a["prefill_median_ms"] + b["prefill_median_ms"]) / 2
    best = (a["prefill_tokens"] / a["prefill_tokens_per_s"] + b["prefill_tokens"] / b["prefill_tokens_per_s"]) * 1e3 / 2
    mean = (1e3 / a["decode_tokens_per_s"] + 1e3 / b["decode_tokens_per_s"]) / 2
    step = (a["decode_median_step_ms"] + b["decode_median_step_ms"]) / 2
    ttft, tpot = c["ttft_seconds"] * 1e3, c["tpot_seconds"] * 1e3
    gap = c["second_token_seconds"] * 1e3 - ttft
    rows.append((ttft / median, tpot / mean))
    print(f"| {i} | {ttft:.1f} | {ttft / median:.2f} | {ttft / best:.2f} | {tpot:.2f} | {tpot / mean:.2f} | {tpot / step:.2f} | {gap:.1f} |")
ttfts, tpots = [r[0] for r in rows], [r[1] for r in rows]
print(f"median of the pairs: TTFT {st.median(ttfts):.2f}x the median in-process prefill, TPOT {st.median(tpots):.2f}x the mean in-process step; "
      f"both within 1.15x / 1.1x in {sum(1 for a, b in rows if a <= 1.15 and b <= 1.10)} of {pairs} pairs")
PY
