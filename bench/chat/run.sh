#!/usr/bin/env bash
# Endless conversations (issue 12): a 300-turn session through an in-process cluster; writes
# bench/chat/turns.csv and bench/chat/ttft.svg and prints the re-send vs continue TTFT table.
set -euo pipefail
cd "$(dirname "$0")"
MODEL="${MODEL:-${LLMCLUSTER_SHARED:-/work/shared}/models/stories260K/stories260K.bin}"
echo "load average before: $(cat /proc/loadavg)"
dotnet run -c Release -- "$MODEL" . --turns "${TURNS:-300}" --policy "${POLICY:-sink_window(4,252)}" --compare "${COMPARE:-10,100,300}"
echo "load average after: $(cat /proc/loadavg)"
