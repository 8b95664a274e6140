#!/usr/bin/env bash
# The GPU check of issue 20 (docs/GPU.md), for a machine with an NVIDIA GPU, its driver, python3 with
# PyTorch + transformers, and no .NET. It unpacks the payload made by scripts/gpu-pack.sh, then:
#   1. stories260K on --device cuda vs the CPU backend: logits (fp32 weights, tolerance 1e-3) and
#      greedy tokens (device-check); the same in bf16 mode
#   2. a random Llama-3.2-1B-shape checkpoint in bf16 (llmctl synth): prefill tokens/s at 512 and 2048
#      tokens, decode tokens/s at batch 1, 16, 64 (context 512) with llmctl bench on cuda
#   3. PyTorch eager (transformers LlamaForCausalLM, bf16, default attention) on the same folder and
#      shapes (scripts/gpu_torch_bench.py), and a summary table with the ratios and targets
# Everything goes to $OUT (set by the device tool) or --out DIR; summary.md is the table.
#
# Usage: scripts/gpu-check.sh [--payload DIR] [--out DIR] [--dry-run]
#   --dry-run  for a machine without a GPU (CI, development): checks that --device cuda fails in one
#              line, then runs the same pipeline on ILGPU's CPU accelerator with tiny shapes, and the
#              PyTorch harness with a stand-in model on the CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
payload="artifacts/gpu"
out="${OUT:-$repo/artifacts/gpu-results}"
dry=0
while (( $# )); do
  case "$1" in
    --payload) payload="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    *) echo "usage: $0 [--payload DIR] [--out DIR] [--dry-run]" >&2; exit 2 ;;
  esac
done
payload="$(cd "$payload" && pwd)" || { echo "error: no payload at $payload (run scripts/gpu-pack.sh first)" >&2; exit 2; }
mkdir -p "$out"
out="$(cd "$out" && pwd)"
log="$out/gpu-check.log"
: > "$log"
say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$log" >&2; }
started=$SECONDS

# --- unpack the runtime and llmctl -------------------------------------------------------------
work="$(mktemp -d /tmp/llmcluster-gpu.XXXXXX)"
up_pid=""
trap '[[ -n "$up_pid" ]] && kill -TERM "$up_pid" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/dotnet"
tar -xJf "$payload/dotnet-runtime.tar.xz" -C "$work/dotnet"
tar -xJf "$payload/llmctl.tar.xz" -C "$work"
export DOTNET_ROOT="$work/dotnet" DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
# A wrapper file, not a shell function: `timeout` runs programs.
mkdir -p "$work/bin"
printf '#!/bin/sh\nexec "%s/dotnet" "%s/llmctl/llmctl.dll" "$@"\n' "$DOTNET_ROOT" "$work" > "$work/bin/llmctl"
chmod +x "$work/bin/llmctl"
export PATH="$work/bin:$PATH"
# The Python with PyTorch: $PYTHON, else the first python3 on the path (or Debian's) that imports torch.
if [[ -z "${PYTHON:-}" ]]; then
  for p in python3 /usr/bin/python3; do
    if "$p" -c 'import torch' 2>/dev/null; then PYTHON="$p"; break; fi
  done
fi
PYTHON="${PYTHON:-python3}"
# The whole check must fit the device's time (15 minutes a session, the machine's start included):
# each step's limit is cut to what is left of GPU_CHECK_BUDGET seconds, and a step with under 20 s
# left is skipped (status "skipped"), so the summary is always written.
budget="${GPU_CHECK_BUDGET:-540}"
# run NAME SECONDS CMD...: stdout to NAME.out (JSON where --json), stderr to NAME.err, status logged.
run() {
  local name="$1" limit="$2"; shift 2
  local left=$(( budget - (SECONDS - started) - 15 ))
  (( left < limit )) && limit=$left
  if (( limit < 20 )); then
    say "$name: skipped (time budget of $budget s spent)"; echo "$name skipped" >> "$out/status.txt"; return 124
  fi
  say "$name: $*"
  timeout "$limit" "$@" > "$out/$name.out" 2> "$out/$name.err"
  local rc=$?
  say "$name: exit $rc ($(( SECONDS - started )) s so far)"
  echo "$name $rc" >> "$out/status.txt"
  return $rc
}
: > "$out/status.txt"
say "runtime $(ls "$DOTNET_ROOT/shared/Microsoft.NETCore.App"), payload $payload"

# --- the machine ----------------------------------------------------------------------------------
{
  echo "date: $(date -u)"
  uname -a
  nvidia-smi 2>&1 || echo "nvidia-smi: not available"
  "$PYTHON" -c 'import torch, sys; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1
  "$PYTHON" -c 'import transformers; print("transformers", transformers.__version__)' 2>&1
} > "$out/machine.txt"
# cuBLAS from the Python environment's NVIDIA wheels (the engine also searches, this makes it explicit).
if [[ -z "${LLMCLUSTER_CUBLAS:-}" ]]; then
  cublas="$("$PYTHON" - <<'PY' 2>/dev/null
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()]
for r in roots:
    for pattern in ("nvidia/cublas/lib/libcublas.so*", "nvidia/cu1*/lib/libcublas.so*"):
        hits = sorted(glob.glob(os.path.join(r, pattern)))
        if hits:
            print(os.path.dirname(hits[-1])); sys.exit(0)
PY
)"
  [[ -n "$cublas" ]] && export LLMCLUSTER_CUBLAS="$cublas"
fi
say "LLMCLUSTER_CUBLAS=${LLMCLUSTER_CUBLAS:-<not found: the engine searches itself>}"

gpu=0
nvidia-smi -L > /dev/null 2>&1 && gpu=1
if (( !gpu )); then
  say "no NVIDIA GPU found (nvidia-smi -L failed)"
  run no-cuda 60 llmctl generate --model "$payload/stories260K/stories260K.bin" --device cuda --max-tokens 1
  grep -q "no CUDA device found" "$out/no-cuda.err" && say "llmctl --device cuda: $(head -1 "$out/no-cuda.err")"
  if (( !dry )); then
    echo "# GPU check: not measured" > "$out/summary.md"
    echo "No NVIDIA GPU on this machine: $(head -1 "$out/no-cuda.err")" >> "$out/summary.md"
    exit 2
  fi
fi

# --- shapes: the real ones on a GPU, tiny ones for a dry run ------------------------------------
if (( gpu && !dry )); then
  device=cuda; preset=llama-3.2-1b; prefill=(512 2048); context=512; steps=64; torch_dev=cuda; torch_extra=()
  check_tokens=64; check_generate=60
else
  device=ilgpu-cpu; preset=tiny; prefill=(32 64); context=32; steps=4; torch_dev=cpu; torch_extra=(--stand-in)
  check_tokens=16; check_generate=12
fi
say "device $device, preset $preset"

# Steps run most important first and each has a limit, so that a slow step cannot starve the rest
# of the budget: correctness, the cluster, then the benchmark pairs, informational checks last.
# 1. stories260K: logits and greedy tokens against the CPU backend.
s260="$payload/stories260K/stories260K.bin"
run check-stories260K-fp32 120 llmctl device-check --model "$s260" --device "$device" --precision fp32 --tokens "$check_tokens" --generate "$check_generate" --tolerance 1e-3 --json
run check-stories260K-bf16 120 llmctl device-check --model "$s260" --device "$device" --precision bf16 --tokens "$check_tokens" --generate "$check_generate" --tolerance 1e-3 --json
run generate-stories260K-cpu 60 llmctl generate --model "$s260" --prompt "Once upon a time" --max-tokens 60
run generate-stories260K-device 90 llmctl generate --model "$s260" --prompt "Once upon a time" --device "$device" --max-tokens 60

# 1b. the cluster: a prefill worker on the device, a decode worker on the CPU; the tokens through the
# gateway must equal the local CPU run's (generate-stories260K-cpu).
port="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
say "cluster: llmctl up --prefill-device $device --decode-device cpu (gateway :$port)"
llmctl up --model "$s260" --prefill-device "$device" --decode-device cpu --port "$port" > "$out/cluster-up.out" 2> "$out/cluster-up.err" &
up_pid=$!
for _ in $(seq 1 60); do grep -q "cluster up" "$out/cluster-up.out" 2>/dev/null && break; kill -0 $up_pid 2>/dev/null || break; sleep 1; done
if run cluster-generate 60 llmctl generate --endpoint "http://127.0.0.1:$port" --prompt "Once upon a time" --max-tokens 60; then
  if [[ "$(tr -s '[:space:]' ' ' < "$out/cluster-generate.out")" == "$(tr -s '[:space:]' ' ' < "$out/generate-stories260K-cpu.out")" ]]; then
    echo "equal" > "$out/cluster-vs-local.txt"; say "cluster tokens equal the local CPU run"
  else
    echo "DIFFERENT" > "$out/cluster-vs-local.txt"; say "cluster text differs from the local CPU run"
  fi
fi
kill -TERM $up_pid 2>/dev/null; wait $up_pid 2>/dev/null; up_pid=""

# 2. the benchmark checkpoint, PyTorch eager on it, then our numbers on the same shapes.
model="$work/$preset"
run synth 180 llmctl synth --preset "$preset" --out "$model" --dtype bf16 --seed 1
run torch 240 "$PYTHON" scripts/gpu_torch_bench.py --model "$model" --device "$torch_dev" "${torch_extra[@]}" \
  --prefill "$(IFS=,; echo "${prefill[*]}")" --batches 1,16,64 --context "$context" --steps "$steps" --out "$out/torch.json"
run bench-prefill-${prefill[0]}-decode-b16 150 llmctl bench --model "$model" --device "$device" --prompt-tokens "${prefill[0]}" --decode-tokens "$steps" --batch 16 --chunk "${prefill[0]}" --json
run bench-decode-b64 150 llmctl bench --model "$model" --device "$device" --prompt-tokens "$context" --decode-tokens "$steps" --batch 64 --chunk "$(( context > 64 ? context : 64 ))" --json
run bench-prefill-${prefill[1]} 150 llmctl bench --model "$model" --device "$device" --prompt-tokens "${prefill[1]}" --decode-tokens 2 --batch 1 --chunk "${prefill[1]}" --json

# 3. informational: the 1B shape's bf16 logits against the CPU, and prefill attention on the kernels
# instead of cuBLAS (tells the two paths apart if a check above fails).
if (( gpu && !dry )); then
  run check-1b-bf16 120 llmctl device-check --model "$model" --device "$device" --tokens 16 --generate 4 --tolerance 1 --json
  # cuBLAS attention in blocks of 16 query rows: the 64-token prompt takes 4 causal blocks.
  run check-stories260K-fp32-query-blocks 90 env LLMCLUSTER_ATTENTION_QUERY_BLOCK=16 llmctl device-check --model "$s260" --device "$device" --precision fp32 --tokens "$check_tokens" --generate "$check_generate" --tolerance 1e-3 --json
  run check-stories260K-fp32-kernel-attention 90 env LLMCLUSTER_CUBLAS_ATTENTION=0 llmctl device-check --model "$s260" --device "$device" --precision fp32 --tokens "$check_tokens" --generate "$check_generate" --tolerance 1e-3 --json
  # Where the device time of a long prefill goes (each operation synchronized: slower, for reading only).
  run profile-prefill-${prefill[1]} 60 env LLMCLUSTER_DEVICE_PROFILE=1 llmctl bench --model "$model" --device "$device" --prompt-tokens "${prefill[1]}" --decode-tokens 2 --batch 1 --chunk "${prefill[1]}" --json
fi

python3 scripts/gpu_summary.py "$out" "$device" > "$out/summary.md" 2>> "$log"
cat "$out/summary.md"
say "done in $(( SECONDS - started )) s; results in $out"
# The device tool brings back only a few files: everything also goes into one archive.
tar -C "$out" -czf "/tmp/gpu-results.tgz" . && mv /tmp/gpu-results.tgz "$out/all-results.tgz"
