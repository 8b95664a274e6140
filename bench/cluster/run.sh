#!/usr/bin/env bash
# Issue 7 benchmark: TTFT and TPOT through the cluster (`llmctl up`, four processes on loopback)
# against the in-process engine (`llmctl generate --local`) on the same checkpoint and prompt, and the
# KV transfer time and bytes per request from the workers' own metrics.
# Usage: bash bench/cluster/run.sh [MODEL_DIR] [REQUESTS] [REPEATS]   (default: a synthetic smollm2-135m;
# the prompt is one sentence REPEATS times: 3 gives the issue's 236 tokens, 23 about 1,800)
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-/tmp/llmcluster-bench/smollm2-135m}
requests=${2:-5}
repeats=${3:-3}
source bench/cluster/common.sh
prompt=$(python3 -c "print('The cluster splits each request between a prefill worker and a decode worker. ' * $repeats)")
prompt_tokens=$((repeats * 236 / 3))
args=(--prompt "$prompt" --max-tokens 64 --temperature 0 --json)

echo "== in-process engine, warm (llmctl bench: best of 3 prefills, median decode step)"
$llmctl bench --model "$model" --prompt-tokens "$prompt_tokens" --decode-tokens 64 --batch 1 --json 2>/dev/null | python3 -c 'import json,sys
r=json.load(sys.stdin)
print("prompt tokens %d; TTFT %.1f ms; TPOT median %.2f ms (mean step %.2f ms)" % (r["prefill_tokens"], r["prefill_tokens"]/r["prefill_tokens_per_s"]*1e3, r["decode_median_step_ms"], 1e3/r["decode_tokens_per_s"]))'

port=$(free_port)
log=$(mktemp)
$llmctl up --model "$model" --port "$port" >"$log" 2>&1 &
up=$!
trap 'kill $up 2>/dev/null; wait $up 2>/dev/null; rm -f "$log"' EXIT
wait_up "$log"
echo "== through the cluster (llmctl generate --endpoint), $requests runs after one warm-up (and the client's own first request)"
$llmctl generate --endpoint "http://127.0.0.1:$port" "${args[@]}" >/dev/null
# The decode worker's own step time (llm_decode_step_seconds, the batched forward pass alone) over the
# measured requests: the cluster's TPOT is that plus the per-token path plus the wait for the KV before the
# first decode step (between the first and second token), spread over the 63 intervals.
steps() { for url in $(grep -E "^ +metrics " "$log" | sed 's/^ *metrics *//; s/,/ /g'); do curl -s "$url"; done | awk '/^llm_decode_step_seconds_sum/ {s+=$2} /^llm_decode_step_seconds_count/ {c+=$2} END {print s, c}'; }
# The measured requests come from one client process (--repeat), its first request unmeasured: a new
# process per request spent 4.8-7.9 ms of CPU per token compiling its per-token code, on the cores the
# decode step runs on (bench/RESULTS.md, issue 17). The step counter is read once that first one is done.
out=$(mktemp)
$llmctl generate --endpoint "http://127.0.0.1:$port" "${args[@]}" --repeat $((requests + 1)) >"$out" &
client=$!
until [ "$(wc -l <"$out")" -ge 1 ] || ! kill -0 "$client" 2>/dev/null; do sleep 0.02; done
steps_before=$(steps)
wait "$client"
tail -n +2 "$out" | python3 -c 'import json,sys,statistics as st
rows=[json.loads(l) for l in sys.stdin]
print("TTFT median %.1f ms; TPOT median %.2f ms; second token (client) median %.1f ms" % (st.median([r["ttft_seconds"] for r in rows])*1e3, st.median([r["tpot_seconds"] for r in rows])*1e3, st.median([r["second_token_seconds"] for r in rows])*1e3))'
rm -f "$out"
read s0 c0 <<<"$steps_before"; read s1 c1 <<<"$(steps)"
python3 -c "print('decode worker step (forward pass alone): %d steps, mean %.2f ms' % ($c1 - $c0, ($s1 - $s0) / max(1, $c1 - $c0) * 1e3))"
# Every service's /metrics from up's endpoint table; only the workers move KV (prefill puts, decode gets
# and checkpoints), so only their lines print.
for url in $(grep -E "^ +metrics " "$log" | sed 's/^ *metrics *//; s/,/ /g'); do
  role=$url
  curl -s "$url" | python3 -c "
import re, sys
from collections import defaultdict
v = defaultdict(float)  # summed over the other labels (dtype)
for l in sys.stdin:
    m = re.match(r'(llm_kv_transfer_[a-z_]+)\\{([^}]*)\\} (\\S+)', l)
    if m:
        d = re.search(r'direction=\\\"(\\w+)\\\"', m.group(2))
        if d: v[(m.group(1), d.group(1))] += float(m.group(3))
for d in ('put', 'get'):
    n = v[('llm_kv_transfer_seconds_count', d)]
    if n:
        secs = v[('llm_kv_transfer_seconds_sum', d)] / n
        mb = v[('llm_kv_transfer_bytes_total', d)] / n / 1e6
        print('$role KV %s: %d transfers, mean %.1f ms, mean %.2f MB' % (d, n, secs * 1e3, mb))
"
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
