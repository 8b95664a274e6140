#!/usr/bin/env bash
# Reproduces the KV-cache compression results of bench/RESULTS.md (issue 5) on stories260K.
# Needs ../shared (LLMCLUSTER_SHARED or the default below); writes into bench/kv/. About 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED="${LLMCLUSTER_SHARED:-../shared}"
M="$SHARED/models/stories260K/stories260K.bin"
T="$SHARED/corpus/tinystories_valid_head.txt"
dotnet build -c Release tools/llmctl -v q -nologo >/dev/null
L="dotnet tools/llmctl/bin/Release/net10.0/llmctl.dll"
# Filters from text 200000 tokens in; the evaluation reads the first 4 x 4095 tokens.
$L calibrate --model "$M" --text "$T" --out bench/kv/stories260K_qfilters.safetensors \
  --seq-len 512 --sequences 8 --samples 3000 --offset-tokens 200000 --threads 1
$L perplexity --model "$M" --text "$T" --tokens 4096 --sequences 4 --threads 1 \
  --filters bench/kv/stories260K_qfilters.safetensors --extrapolate --svg bench/kv/perplexity_stories260K.svg --json \
  --policy dense --policy "window(64)" --policy "sink_window(4,60)" --policy "qfilters(64,16)" --policy "knorm(64,16)" \
  --policy "window(256)" --policy "sink_window(4,252)" --policy "qfilters(256,32)" --policy "knorm(256,32)" \
  > bench/kv/perplexity_stories260K.json
$L perplexity --model "$M" --text "$T" --tokens 4096 --sequences 4 --threads 1 \
  --filters bench/kv/stories260K_qfilters.safetensors \
  --policy "rerotate(qfilters(64,16))" --policy "rerotate(knorm(64,16))" \
  --policy "rerotate(qfilters(256,32))" --policy "rerotate(knorm(256,32))" > bench/kv/perplexity_rerotate.md
$L bench streaming --model "$M" --threads 1 --steps 16 --stream-tokens 100000 > bench/kv/streaming.md
