#!/usr/bin/env bash
# The decode worker's own step (llm_decode_step_seconds) with the token relay stopped and running, next to the
# in-process engine's step: whether a cluster TPOT above the in-process step is the decode worker's forward
# pass or the CPU the relay (gateway and client) takes beside it on shared cores (bench/RESULTS.md, issue 17).
# Each round: one 400-token request of the benchmark prompt; once decoding has begun the gateway and the
# client are stopped (SIGSTOP: the decode worker goes on, its few bytes a token wait in the socket) for
# 0.8 s, then let go for 0.8 s; then `llmctl bench` in-process (64 steps after the same prompt).
# The stopped window covers the first ~90 tokens, the running one the next ~90 (about 100 positions later:
# about 1.5 % more attention reads on the SmolLM2-135M shape).
# Usage: [STOP=client] [CORES=dedicated] bash bench/cluster/decode-alone.sh [MODEL_DIR] [REPEATS] [ROUNDS]   (REPEATS 3: the 236-token
# prompt; STOP=client stops the client only, so that the gateway's share and the client's come apart; STOP=none
# stops nothing: the first window against the second, e.g. whether the first steps after the hand-off are slower)
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-/tmp/llmcluster-bench/smollm2-135m}
repeats=${2:-3}
rounds=${3:-3}
source bench/cluster/common.sh
use_prompt "$repeats"
local_json=$(mktemp); cleanup=("$local_json")
start_cluster
gateway=$(grep -E "gateway +ready" "$log" | grep -oE "pid [0-9]+" | cut -d' ' -f2)
args=(--endpoint "http://127.0.0.1:$port" --prompt "$prompt" --temperature 0 --json)
$client generate "${args[@]}" --max-tokens 100 --repeat 2 >/dev/null
# The decode worker's metrics: the endpoint that has the step histogram (after the warm-up's steps).
metrics=""
for url in $(metrics_urls); do
  case "$(curl -s "$url")" in *"llm_decode_step_seconds_count"*) metrics=$url ;; esac
done
[ -n "$metrics" ] || { echo "no llm_decode_step_seconds on any metrics endpoint" >&2; exit 1; }
# "sum count" of the step histogram.
steps() { curl -s "$metrics" | awk '/^llm_decode_step_seconds_sum/{s=$2} /^llm_decode_step_seconds_count/{c=$2} END{print s, c}'; }
mean() { awk -v a="$1" -v b="$2" 'BEGIN{split(a,x," "); split(b,y," "); n=y[2]-x[2]; if (n>0) printf "%.2f ms (%d steps)", (y[1]-x[1])*1e3/n, n; else printf "no steps"}'; }
echo "load $(cut -d' ' -f1-3 /proc/loadavg), prompt ${prompt_tokens} tokens"
for round in $(seq "$rounds"); do
  $client generate "${args[@]}" --max-tokens 400 --ignore-eos >/dev/null &
  client_pid=$!
  # Until decoding has begun (the prompt's prefill and KV hand-off done): the step count moves.
  before=$(steps | cut -d' ' -f2)
  for _ in $(seq 300); do [ "$(steps | cut -d' ' -f2)" != "$before" ] && break; sleep 0.05; done
  stopped=("$client_pid"); [ "${STOP:-both}" = client ] || stopped+=("$gateway")
  [ "${STOP:-both}" = none ] || kill -STOP "${stopped[@]}"
  a=$(steps); sleep 0.8; b=$(steps)
  [ "${STOP:-both}" = none ] || kill -CONT "${stopped[@]}"
  sleep 0.3; c=$(steps); sleep 0.8; d=$(steps)
  wait "$client_pid"
  in_process_json "$local_json"
  in_process=$(python3 -c "import sys, json; d = json.load(open(sys.argv[1])); print('%.2f ms' % (1e3 / d['decode_tokens_per_s']))" "$local_json")
  echo "round $round: decode step, ${STOP:-both} stopped $(mean "$a" "$b"); relay running $(mean "$c" "$d"); in-process mean step $in_process"
done
