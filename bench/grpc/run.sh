#!/usr/bin/env bash
# Loopback benchmark of the gRPC layer: every client (ours, grpcio) against every server (ours,
# grpcio), all on 127.0.0.1 on this machine, ROUNDS times; prints every measurement as
# "client server metric value", then the median of each in a markdown table (summarize.py).
# Usage: bash bench/grpc/run.sh [SECONDS_PER_UNARY_METRIC] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-5}"
rounds="${2:-3}"
py=/usr/bin/python3
stubs="$(mktemp -d)"
trap 'rm -rf "$stubs"' EXIT
"$py" -m grpc_tools.protoc -I protos/test --python_out="$stubs" --grpc_python_out="$stubs" protos/test/interop.proto
dotnet build bench/grpc -c Release -o "$stubs/bin" -v q -nologo >/dev/null
ours=("$stubs/bin/Cluster.Bench.Grpc")

# start_server NAME CMD...: runs a server with stdin on a fifo (it stops when the fifo closes), sets $port.
start_server() {
  local fifo="$stubs/$1.in"; shift
  rm -f "$fifo" "$fifo.out"
  mkfifo "$fifo"
  "$@" <"$fifo" >"$fifo.out" 2>&1 &
  server_pid=$!
  exec {server_stdin}>"$fifo"
  for _ in $(seq 100); do grep -q '^PORT ' "$fifo.out" 2>/dev/null && break; sleep 0.1; done
  port="$(awk '/^PORT /{print $2; exit}' "$fifo.out")"
}
stop_server() { exec {server_stdin}>&-; wait "$server_pid" || true; }

measure() {
  for server in ours grpcio; do
    if [ $server = ours ]; then start_server ours "${ours[@]}" server
    else start_server grpcio "$py" tests/interop/python/interop_server.py "$stubs"; fi
    for client in ours grpcio; do
      if [ $client = ours ]; then "${ours[@]}" client "$port" "$seconds"
      else "$py" bench/grpc/bench_client.py "$stubs" "$port" "$seconds"; fi | sed "s/^/$client $server /"
    done
    stop_server
    rm -f "$stubs"/*.in "$stubs"/*.out
  done
}
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
for _ in $(seq "$rounds"); do measure; done | tee "$stubs/all.txt"
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 bench/grpc/summarize.py <"$stubs/all.txt"
