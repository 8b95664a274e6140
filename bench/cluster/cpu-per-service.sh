#!/usr/bin/env bash
# CPU time each service of `llmctl up` spends per request (utime + stime from /proc/PID/stat, before and
# after N requests, after 2 warm-up ones), and the mean llm_prefill_seconds / TTFT over those requests:
# where a cluster request's time goes on a machine whose cores all services share (bench/RESULTS.md, issue 17).
# Usage: [MAX_TOKENS=64] [CORES=dedicated] bash bench/cluster/cpu-per-service.sh [MODEL_DIR] [REPEATS] [REQUESTS]
# (REPEATS as run.sh's: 3 gives a 236-token prompt; LLM_* variables reach the services, e.g. LLM_KV_PREFETCH=false)
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-/tmp/llmcluster-bench/smollm2-135m}
repeats=${2:-3}
n=${3:-6}
source bench/cluster/common.sh
use_prompt "$repeats"
out=$(mktemp); cleanup=("$out")
start_cluster
# "role cpu-ticks voluntary involuntary" for every service process `up` started (context switches summed
# over its threads: each is a thread put to sleep or taken off a core, on cores the decode step needs).
cpu() {
  for p in $(pgrep -P $up); do
    local v=0 i=0
    for t in /proc/$p/task/*/status; do
      read -r a b < <(awk '/^voluntary_ctxt/{v=$2} /^nonvoluntary_ctxt/{i=$2} END{print v, i}' "$t" 2>/dev/null || echo "0 0")
      v=$((v + a)); i=$((i + b))
    done
    echo "$(tr '\0' ' ' </proc/$p/cmdline | grep -oE 'serve [a-z]+' | cut -c7-) $(awk '{print $14+$15}' /proc/$p/stat) $v $i"
  done
}
metrics() { for url in $(metrics_urls); do curl -s "$url" | grep -E "^llm_(prefill|time_to_first_token)_seconds_(sum|count)"; done; }
args=(--prompt "$prompt" --max-tokens "${MAX_TOKENS:-64}" --temperature 0 --json)
$client generate --endpoint "http://127.0.0.1:$port" "${args[@]}" --repeat 2 >/dev/null
cpu0=$(cpu); m0=$(metrics)
client_time=$(mktemp); cleanup+=("$client_time")
/usr/bin/time -o "$client_time" -f "client %U %S %w %c" $client generate --endpoint "http://127.0.0.1:$port" "${args[@]}" --repeat "$n" >"$out"
cpu1=$(cpu); m1=$(metrics)
hz=$(getconf CLK_TCK)
tokens=$((n * ${MAX_TOKENS:-64}))
join <(echo "$cpu0" | sort) <(echo "$cpu1" | sort) | awk -v n="$n" -v hz="$hz" -v t="$tokens" \
  '{printf "%s %.1f ms CPU per request, %.1f context switches per token (%.1f involuntary)\n", $1, ($5-$2)*1000/hz/n, ($6+$7-$3-$4)/t, ($7-$4)/t}'
# The client as a whole process (its start-up included: compare clients with each other, not with the services).
awk -v n="$n" -v t="$tokens" '/^client/{printf "client %.1f ms CPU per request, %.1f context switches per token (%.1f involuntary)\n", ($2+$3)*1000/n, ($4+$5)/t, $5/t}' "$client_time"
python3 - "$m0" "$m1" "$out" <<'PY'
import json, sys
def read(text):
    d = {}
    for line in text.splitlines():
        name, value = line.split()
        name = name.split("{")[0]
        d[name] = d.get(name, 0) + float(value)
    return d
a, b = read(sys.argv[1]), read(sys.argv[2])
for m in ["llm_prefill_seconds", "llm_time_to_first_token_seconds"]:
    c = b.get(m + "_count", 0) - a.get(m + "_count", 0)
    if c: print("%s mean %.1f ms over %d requests" % (m, (b[m + "_sum"] - a[m + "_sum"]) / c * 1e3, c))
rows = [json.loads(l) for l in open(sys.argv[3])]
print("TTFT ms", [round(r["ttft_seconds"] * 1e3) for r in rows], "TPOT ms", [round(r["tpot_seconds"] * 1e3, 1) for r in rows])
PY
