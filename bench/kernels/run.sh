#!/usr/bin/env bash
# fp32 decode products, Fp32Dots against OpenBLAS, alternating (bench/RESULTS.md, "fp32 decode products
# without sgemm"). Usage: bash bench/kernels/run.sh [MODEL_DIR]   (MODEL_DIR: e.g. llmctl synth --preset
# smollm2-135m --dtype f32 --seed 1 --out /tmp/smollm; without it only the single products run)
set -euo pipefail
cd "$(dirname "$0")"
dotnet build -c Release -v q -nologo >/dev/null
bin="dotnet bin/Release/net10.0/KernelBench.dll"
export DOTNET_TieredCompilation=0 # fully optimized code from the first call: the timed loops are short
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for shape in "16 576 192 60" "16 576 1536 20" "16 1536 576 20" "16 576 49152 2" "1 576 1536 50" "1 576 49152 3"; do
  for _ in 1 2 3; do
    LLMCLUSTER_FP32_DOTS=0 $bin matmul $shape f32
    LLMCLUSTER_FP32_DOTS=1 $bin matmul $shape f32
  done
done
$bin matmul 16 576 1536 20 q8
if [ -n "${1:-}" ]; then
  for threads in 1 2; do
    LLMCLUSTER_FP32_DOTS=1 $bin step "$1" $threads 16
    LLMCLUSTER_FP32_DOTS=0 $bin step "$1" $threads 16
  done
fi
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
