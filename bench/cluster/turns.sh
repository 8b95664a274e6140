#!/usr/bin/env bash
# Issue 17, KV-aware routing: TTFT of a conversation's later turns when each short turn is prefilled on
# a prefill worker (which fetches the history from the cache manager and stores the turn's KV, which the
# decode worker then fetches) against the same turns started on the decode worker that kept the
# conversation's KV (no transfer). Same `llmctl up` cluster shape, same model, same turns, alternated.
# Usage: bash bench/cluster/turns.sh [MODEL_DIR] [ROUNDS]   (default: a synthetic smollm2-135m)
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-/tmp/llmcluster-bench/smollm2-135m}
rounds=${2:-2}
source bench/cluster/common.sh
turns=$(mktemp)
# A long first turn (the history every later turn continues), then eight short ones.
python3 - >"$turns" <<'EOF'
print("The cluster splits each request between a prefill worker and a decode worker. " * 3)
for q in ["What happens next?", "And then?", "Why is that?", "Tell me more.", "Is it fast?",
          "Where does the KV live?", "Who keeps it?", "What if it dies?"]:
    print(q)
EOF

run() { # $1: label, $2: --max-local-prefill
  local port log up
  port=$(free_port)
  log=$(mktemp)
  LLM_MAX_LOCAL_PREFILL=$2 $llmctl up --model "$model" --port "$port" --port-offset 700 >"$log" 2>&1 &
  up=$!
  wait_up "$log"
  $llmctl chat --endpoint "http://127.0.0.1:$port" --policy "sink_window(4,508)" --max-tokens 32 --temperature 0 --ignore-eos <"$turns" 2>&1 >/dev/null \
    | grep -o 'turn [0-9]*:.*TTFT [0-9.]* ms, TPOT [0-9.]* ms' | sed "s/^/$1 /"
  kill $up; wait $up 2>/dev/null || true
  rm -f "$log"
}
for r in $(seq "$rounds"); do
  run prefill 0
  run resident 256
done | tee /dev/stderr | python3 -c 'import re,sys,statistics as st
rows=[re.match(r"(\w+) turn (\d+):.*TTFT ([\d.]+) ms, TPOT ([\d.]+) ms", l).groups() for l in sys.stdin]
for label in ("prefill","resident"):
    later=[float(t) for l,n,t,_ in rows if l==label and int(n)>0]
    first=[float(t) for l,n,t,_ in rows if l==label and int(n)==0]
    tpot=[float(p) for l,n,_,p in rows if l==label and int(n)>0]
    print("%-8s first turn TTFT median %.1f ms; later turns TTFT median %.1f ms (p90 %.1f), TPOT median %.2f ms, n=%d" % (label, st.median(first), st.median(later), sorted(later)[int(0.9*(len(later)-1))], st.median(tpot), len(later)))'
rm -f "$turns"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
