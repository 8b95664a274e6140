#!/usr/bin/env bash
# Starts a private redis-server on 127.0.0.1, runs the StackExchange.Redis + store benchmark and redis-benchmark
# (apt redis-tools) on the same commands, one connection each, sequential and -P 100. Usage:
#   bash bench/redis/run.sh [SECONDS_PER_CASE]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-3}"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --daemonize no >/dev/null &
pid=$!
trap 'kill $pid; rm -rf "$dir"' EXIT
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
echo "## StackExchange.Redis + our store ($(redis-server --version | cut -d' ' -f3))"
dotnet run -c Release --project bench/redis -- "$port" "$secs"
echo "## redis-benchmark, 1 connection (-c 1), sequential (-P 1) and pipelined (-P 100)"
echo "# load: $(cat /proc/loadavg)"
redis-cli -p "$port" hset bench:h model stories15M status running generated_tokens 17 >/dev/null
set -f  # XADD takes a literal "*"
for P in 1 100; do
  n=$(( P == 1 ? 50000 : 500000 ))
  for cmd in "PING" "GET bench:k" "HSET bench:h generated_tokens 18" "HGETALL bench:h" "XADD bench:rb * i 1 t 2"; do
    # shellcheck disable=SC2086
    rps=$(redis-benchmark -p "$port" -c 1 -P "$P" -n "$n" -q $cmd 2>/dev/null | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1)
    printf '%-40s -P %-4s %s\n' "$cmd" "$P" "$rps"
  done
done
echo "# load: $(cat /proc/loadavg)"
