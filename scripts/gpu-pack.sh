#!/usr/bin/env bash
# Packs what a GPU machine without .NET needs for scripts/gpu-check.sh (docs/GPU.md):
#   artifacts/gpu/dotnet-runtime.tar.xz  the `dotnet` host + shared/Microsoft.NETCore.App and
#                                        Microsoft.AspNetCore.App from this machine's SDK install
#   artifacts/gpu/llmctl.tar.xz          llmctl published framework-dependent (with ILGPU)
#   artifacts/gpu/stories260K/           the small reference model (bin + tokenizer)
# and checks that the whole payload stays under the 64 MB the device tool carries.
# Usage: scripts/gpu-pack.sh [out-dir]   (default artifacts/gpu, ignored by git)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-artifacts/gpu}"
limit_mb=64
shared="${LLMCLUSTER_SHARED:-../shared}"

rm -rf "$out"
mkdir -p "$out"
publish="$(mktemp -d)"
trap 'rm -rf "$publish"' EXIT

echo "publishing llmctl (framework-dependent, Release) ..." >&2
dotnet publish tools/llmctl/llmctl.csproj -c Release -o "$publish/llmctl" --self-contained false -p:DebugType=none -nologo -v q >&2
tar -C "$publish" -cJf "$out/llmctl.tar.xz" llmctl

# The runtime that the SDK here runs on: the host binary and the shared frameworks llmctl needs
# (llmctl references the services, so ASP.NET Core's too).
root="$(dirname "$(readlink -f "$(command -v dotnet)")")"
netcore="$(ls -d "$root"/shared/Microsoft.NETCore.App/* | sort -V | tail -1)"
aspnet="$(ls -d "$root"/shared/Microsoft.AspNetCore.App/* | sort -V | tail -1)"
hostfxr="$(ls -d "$root"/host/fxr/* | sort -V | tail -1)"
echo "packing the .NET runtime from $root ($(basename "$netcore")) ..." >&2
tar -C "$root" -cJf "$out/dotnet-runtime.tar.xz" dotnet "${hostfxr#$root/}" "${netcore#$root/}" "${aspnet#$root/}"

mkdir -p "$out/stories260K"
cp "$shared/models/stories260K/stories260K.bin" "$shared/models/stories260K/tok512.bin" "$out/stories260K/"

bytes=$(du -sb "$out" | cut -f1)
mb=$(( (bytes + 1048575) / 1048576 ))
ls -l "$out" >&2
echo "payload: $bytes bytes (~${mb} MB; limit ${limit_mb} MB, which also covers the scripts and sources sent with it)"
if (( bytes >= limit_mb * 1048576 - 4 * 1048576 )); then
  echo "error: the payload leaves less than 4 MB of the ${limit_mb} MB for the working tree" >&2
  exit 1
fi
