#!/usr/bin/env bash
# Issue 7 benchmark: TTFT and TPOT through the cluster (`llmctl up`, four processes on loopback)
# against the in-process engine (`llmctl generate --local`) on the same checkpoint and prompt, and the
# KV transfer time and bytes per request from the workers' own metrics.
# Usage: [CORES=dedicated] bash bench/cluster/run.sh [MODEL_DIR] [REQUESTS] [REPEATS]   (default: a synthetic smollm2-135m;
# the prompt is one sentence REPEATS times: 3 gives the issue's 236 tokens, 23 about 1,800)
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-/tmp/llmcluster-bench/smollm2-135m}
requests=${2:-5}
repeats=${3:-3}
source bench/cluster/common.sh
use_prompt "$repeats"
args=(--prompt "$prompt" --max-tokens 64 --temperature 0 --json)

echo "== in-process engine, warm (llmctl bench: best of 3 prefills, median decode step)"
# The in-process run into FILE, and its line.
in_process() {
  in_process_json "$1"
  python3 -c 'import json,sys
r=json.load(open(sys.argv[1]))
print("%sprompt tokens %d; TTFT %.1f ms (median of 3: %.1f ms); TPOT median %.2f ms (mean step %.2f ms)" % (sys.argv[2], r["prefill_tokens"], r["prefill_tokens"]/r["prefill_tokens_per_s"]*1e3, r["prefill_median_ms"], r["decode_median_step_ms"], 1e3/r["decode_tokens_per_s"]))' "$1" "$2"
}
local_json=$(mktemp); local_json2=$(mktemp); before=$(mktemp); after=$(mktemp); out=$(mktemp)
cleanup=("$local_json" "$local_json2" "$before" "$after" "$out")
in_process "$local_json" ""

start_cluster
echo "== through the cluster (llmctl generate --endpoint), $requests runs after one warm-up (and the client's own first request)"
$client generate --endpoint "http://127.0.0.1:$port" "${args[@]}" >/dev/null
# Every service's /metrics, scraped before and after the measured requests: what they report is the
# difference, so the warm-up (a cold connection and first calls: its KV get took 0.5 s) is not in it.
scrape() { for url in $(metrics_urls); do curl -s "$url" | sed "s|^|$url |"; done; }
# The measured requests come from one client process (--repeat), its first request unmeasured: a new
# process per request spent 4.8-7.9 ms of CPU per token compiling its per-token code, on the cores the
# decode step runs on (bench/RESULTS.md, issue 17). The metrics are scraped once that first one is done.
$client generate --endpoint "http://127.0.0.1:$port" "${args[@]}" --repeat $((requests + 1)) >"$out" &
client_pid=$!
until [ "$(wc -l <"$out")" -ge 1 ] || ! kill -0 "$client_pid" 2>/dev/null; do sleep 0.02; done
scrape >"$before"
wait "$client_pid"
scrape >"$after"
# The in-process run again, the cluster idle: the machine's speed drifts (other work, clocks), and the
# ratios below use the mean of the runs before and after the cluster's.
in_process "$local_json2" "in-process again, after the cluster's requests: "
tail -n +2 "$out" | python3 -c 'import json,sys,statistics as st
rows=[json.loads(l) for l in sys.stdin]
locals_=[json.load(open(f)) for f in sys.argv[1:]]
ttft, tpot = st.median([r["ttft_seconds"] for r in rows])*1e3, st.median([r["tpot_seconds"] for r in rows])*1e3
print("TTFT median %.1f ms; TPOT median %.2f ms; second token (client) median %.1f ms" % (ttft, tpot, st.median([r["second_token_seconds"] for r in rows])*1e3))
best = st.mean([l["prefill_tokens"]/l["prefill_tokens_per_s"]*1e3 for l in locals_]); median = st.mean([l["prefill_median_ms"] for l in locals_])
step = st.mean([l["decode_median_step_ms"] for l in locals_]); mean = st.mean([1e3/l["decode_tokens_per_s"] for l in locals_])
print("cluster / in-process (mean of the runs before and after): TTFT %.2fx the best prefill, %.2fx the median; TPOT %.2fx the median step, %.2fx the mean step" % (ttft/best, ttft/median, tpot/step, tpot/mean))' "$local_json" "$local_json2"
# The decode worker's own step time (llm_decode_step_seconds, the batched forward pass alone): the
# cluster's TPOT is that plus the per-token path plus the wait for the KV before the first decode step
# (between the first and second token; with the gateway's --kv-prefetch the get runs during prefill),
# spread over the 63 intervals. Only the workers move KV (prefill puts, decode gets and checkpoints), so
# only their KV lines print.
python3 - "$before" "$after" <<'PY'
import re, sys
from collections import defaultdict
def read(path):
    v = defaultdict(float)  # (url, series, direction or served) -> value, summed over other labels
    for l in open(path):
        m = re.match(r'(\S+) (llm_[a-z_]+)(?:\{([^}]*)\})? (\S+)$', l.strip())
        if not m: continue
        url, name, labels, value = m.groups()
        key = re.search(r'(?:direction|served|outcome)="(\w+)"', labels or '')
        v[(url, name, key.group(1) if key else '')] += float(value)
    return v
b, a = read(sys.argv[1]), read(sys.argv[2])
d = defaultdict(float, {k: a[k] - b.get(k, 0) for k in a})
urls = sorted({k[0] for k in d})
steps = sum(d[(u, 'llm_decode_step_seconds_count', '')] for u in urls)
secs = sum(d[(u, 'llm_decode_step_seconds_sum', '')] for u in urls)
print('decode worker step (forward pass alone): %d steps, mean %.2f ms' % (steps, secs / max(1, steps) * 1e3))
for u in urls:
    for direction in ('put', 'get'):
        n = d[(u, 'llm_kv_transfer_seconds_count', direction)]
        if n:
            print('%s KV %s: %d transfers, mean %.1f ms, mean %.2f MB' % (u, direction, n,
                d[(u, 'llm_kv_transfer_seconds_sum', direction)] / n * 1e3, d[(u, 'llm_kv_transfer_bytes_total', direction)] / n / 1e6))
    n = d[(u, 'llm_kv_get_wait_seconds_count', '')]
    if n:
        print('%s KV get wait before the first message (put landing, lookup): mean %.1f ms' % (u, d[(u, 'llm_kv_get_wait_seconds_sum', '')] / n * 1e3))
    if d[(u, 'llm_kv_prefetches_total', 'started')]:
        print('%s KV prefetched while prefill ran: %d, used by their Decode call: %d (the get above then spans prefill)' % (u,
            d[(u, 'llm_kv_prefetches_total', 'started')], d[(u, 'llm_kv_prefetches_total', 'used')]))
    for served in ('stored', 'streaming'):
        if d[(u, 'llm_kv_cache_hits_total', served)]:
            print('%s gets served from %s KV: %d' % (u, served, d[(u, 'llm_kv_cache_hits_total', served)]))
PY
rm -f "$before" "$after"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
