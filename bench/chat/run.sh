#!/usr/bin/env bash
# Endless conversations (issue 12): a 300-turn session through an in-process cluster; writes
# bench/chat/turns.csv and bench/chat/ttft.svg (or OUT/...) and prints the re-send vs continue TTFT table.
# POLICY=... picks the KV policy; QFILTERS=FILE gives the filters for qfilters(B,W).
set -euo pipefail
cd "$(dirname "$0")"
MODEL="${MODEL:-${LLMCLUSTER_SHARED:-/work/shared}/models/stories260K/stories260K.bin}"
echo "load average before: $(cat /proc/loadavg)"
dotnet run -c Release -- "$MODEL" "${OUT:-.}" --turns "${TURNS:-300}" --policy "${POLICY:-sink_window(4,252)}" --compare "${COMPARE:-10,100,300}" \
  ${QFILTERS:+--qfilters "$QFILTERS"}
echo "load average after: $(cat /proc/loadavg)"
