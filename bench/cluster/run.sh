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
# The other services' ports too, off the defaults: another cluster (a test run, a second bench) may hold them.
offset=${LLMCLUSTER_PORT_OFFSET:-$((2000 + RANDOM % 40 * 100))}
$llmctl up --model "$model" --port "$port" --port-offset "$offset" >"$log" 2>&1 &
up=$!
trap 'kill $up 2>/dev/null; wait $up 2>/dev/null; rm -f "$log"' EXIT
wait_up "$log"
echo "== through the cluster (llmctl generate --endpoint), $requests runs after one warm-up"
$llmctl generate --endpoint "http://127.0.0.1:$port" "${args[@]}" >/dev/null
# The decode worker's own step time (llm_decode_step_seconds, the batched forward pass alone) over the
# measured requests: the cluster's TPOT is that plus the per-token path plus the wait for the KV before the
# first decode step (between the first and second token), spread over the 63 intervals.
steps() { for url in $(grep -E "^ +metrics " "$log" | sed 's/^ *metrics *//; s/,/ /g'); do curl -s "$url"; done | awk '/^llm_decode_step_seconds_sum/ {s+=$2} /^llm_decode_step_seconds_count/ {c+=$2} END {print s, c}'; }
steps_before=$(steps)
for i in $(seq "$requests"); do $llmctl generate --endpoint "http://127.0.0.1:$port" "${args[@]}"; done \
  | python3 -c 'import json,sys,statistics as st
rows=[json.loads(l) for l in sys.stdin]
print("TTFT median %.1f ms; TPOT median %.2f ms; second token (client) median %.1f ms" % (st.median([r["ttft_seconds"] for r in rows])*1e3, st.median([r["tpot_seconds"] for r in rows])*1e3, st.median([r["second_token_seconds"] for r in rows])*1e3))'
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
    w = re.match(r'(llm_kv_get_wait_seconds_(?:sum|count))\\{?\\}? (\\S+)', l)
    if w: v[(w.group(1), '')] += float(w.group(2))
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
    if d == 'get' and v[('llm_kv_get_wait_seconds_count', '')]:
        print('$role KV get wait before the first message (put landing, lookup): mean %.1f ms' % (v[('llm_kv_get_wait_seconds_sum', '')] / v[('llm_kv_get_wait_seconds_count', '')] * 1e3))
"
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
