# Shared by the cluster benchmarks (sourced, from the repository root): builds llmctl, makes the
# synthetic model when MODEL_DIR lacks one; the prompt, the in-process run, and starting `llmctl up`.
dotnet build tools/llmctl -c Release -v q -nologo >/dev/null
llmctl="dotnet tools/llmctl/bin/Release/net10.0/llmctl.dll"
# Every process a benchmark starts (the cluster's services, the in-process reference, the client) runs with
# the JIT setting the services run with (ServiceJit: tiered compilation off, each method compiled once,
# optimized, at its first call). With the runtime's default, the short-lived in-process reference ran its
# prefills in code not yet at the top tier (236 tokens: 380-402 ms against 288-298 ms), and a client
# recompiled its per-token code during its second request, the one the benchmarks keep (that request's
# TTFT 328-360 ms against 282-314 ms for the first, third and fourth; bench/RESULTS.md, issue 17).
export DOTNET_TieredCompilation=0
# CORES=dedicated: a deployment whose decode worker has its hardware to itself, on a 2-core machine. The
# decode worker and the in-process reference each run alone on core 0 with one compute thread; the gateway,
# the cache manager, the prefill worker (one thread), `llmctl up` and the client share core 1. The default,
# CORES=shared, leaves every process on every core (the decode step's two threads then share both cores with
# the relay: bench/RESULTS.md, issue 17). $client is the command that runs the benchmark's client.
case ${CORES:=shared} in
  shared) worker_threads=(); reference=(); client="$llmctl" ;;
  dedicated)
    [ "$(nproc)" -ge 2 ] || { echo "CORES=dedicated needs 2 cores, this machine has $(nproc)" >&2; exit 1; }
    worker_threads=(--threads 1); reference=(taskset -c 0); client="taskset -c 1 $llmctl" ;;
  *) echo "CORES is shared or dedicated, not '$CORES'" >&2; exit 1 ;;
esac
[ -f "$model/config.json" ] || $llmctl synth --preset smollm2-135m --out "$model" --dtype bf16 >/dev/null

# A loopback port nothing listens on now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (up to 2 minutes) until the `llmctl up` writing to log $1 says it is up.
wait_up() { for _ in $(seq 120); do grep -q "cluster up" "$1" && return 0; sleep 1; done; echo "no cluster up within 2 minutes: $(cat "$1")" >&2; return 1; }

# The benchmarks' prompt: one sentence $1 times (3 gives the issue's 236 tokens, 23 about 1,800); sets
# prompt and prompt_tokens.
use_prompt() {
  prompt=$(python3 -c "print('The cluster splits each request between a prefill worker and a decode worker. ' * $1)")
  prompt_tokens=$(($1 * 236 / 3))
}

# The in-process engine on $model into JSON file $1 (`llmctl bench`: best of 3 prefills of $prompt_tokens
# tokens, 64 decode steps, one sequence; with CORES=dedicated on core 0, one thread).
in_process_json() { "${reference[@]}" $llmctl bench --model "$model" --prompt-tokens "$prompt_tokens" --decode-tokens 64 --batch 1 "${worker_threads[@]}" --json 2>/dev/null >"$1"; }

# Starts `llmctl up` on $model and waits until it is up; sets port, log and up. The other services' ports
# are off the defaults too (another cluster, a test run or a second bench, may hold them). On exit the
# cluster is stopped and $log and every path in $cleanup removed. With CORES=dedicated its processes are
# pinned as said above.
cleanup=()
start_cluster() {
  port=$(free_port)
  log=$(mktemp)
  local offset=${LLMCLUSTER_PORT_OFFSET:-$((2000 + RANDOM % 40 * 100))}
  $llmctl up --model "$model" --port "$port" --port-offset "$offset" "${worker_threads[@]}" >"$log" 2>&1 &
  up=$!
  trap 'kill $up 2>/dev/null; wait $up 2>/dev/null; rm -rf "$log" "${cleanup[@]}"' EXIT
  wait_up "$log"
  [ "$CORES" = dedicated ] || return 0
  # Every thread of each process (-a); threads started later inherit their starter's cores.
  for p in $up $(pgrep -P $up); do
    local role; role=$(tr '\0' ' ' </proc/$p/cmdline | grep -oE 'serve [a-z]+' | cut -c7- || true)
    taskset -a -p -c "$([ "$role" = decode ] && echo 0 || echo 1)" "$p" >/dev/null
  done
}

# The metrics URLs of every service of the cluster start_cluster started (from `llmctl up`'s banner).
metrics_urls() { grep -E "^ +metrics " "$log" | sed 's/^ *metrics *//; s/,/ /g'; }
