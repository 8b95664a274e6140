#!/usr/bin/env python3
"""Summary table of a scripts/gpu-check.sh run: our numbers (llmctl bench / device-check JSON) beside
PyTorch eager's (torch.json), the ratio and the issue's target. Usage: gpu_summary.py OUT_DIR DEVICE"""
import glob
import json
import os
import sys

out, device = sys.argv[1], sys.argv[2]


def load(name):
    path = os.path.join(out, name)
    try:
        with open(path) as f:
            text = f.read().strip().splitlines()
        return json.loads(text[-1]) if text else None
    except (OSError, ValueError):
        return None


bench = {os.path.basename(p)[:-4]: load(os.path.basename(p)) for p in glob.glob(os.path.join(out, "bench-*.out"))}
torch = load("torch.json") or {}
ours = {}
for name, b in sorted(bench.items()):
    if not b:
        continue
    ours[("prefill", b["prefill_tokens"])] = b["prefill_tokens_per_s"]
    if b["batch_size"] > 1:
        ours[("decode", b["batch_size"])] = b["batch_decode_tokens_per_s"]
        # Single-stream decode from a batched run: those decode --steps tokens at the compared context
        # (the long-prefill run decodes only 2 tokens, its first step included).
        ours.setdefault(("decode", 1), b["decode_tokens_per_s"])
theirs = {("prefill", p["tokens"]): p["tokens_per_s"] for p in torch.get("prefill", [])}
theirs.update({("decode", d["batch"]): d["tokens_per_s"] for d in torch.get("decode", [])})
targets = {("decode", 1): 1.0, ("decode", 64): 0.8}

backend = next((b["backend"] for b in bench.values() if b), "?")
print(f"# GPU check ({device})\n")
if not device.startswith("cuda"):
    print("**Dry run**: ILGPU's CPU accelerator against a stand-in model on tiny shapes. It checks that the")
    print("pipeline runs end to end; the numbers below measure nothing.\n")
print(f"- ours: {backend}")
print(f"- PyTorch: {torch.get('impl', 'not run')} (torch {torch.get('torch', '?')}, {torch.get('gpu', torch.get('device', '?'))})\n")
print("| measure | ours tokens/s | PyTorch tokens/s | ours / PyTorch | target | met |")
print("| --- | ---: | ---: | ---: | ---: | --- |")
for key in sorted(set(ours) | set(theirs), key=lambda k: (k[0] != "prefill", k[1])):
    kind, n = key
    label = f"prefill {n} tokens" if kind == "prefill" else f"decode batch {n}"
    a, b = ours.get(key), theirs.get(key)
    ratio = a / b if a and b else None
    target = 0.8 if kind == "prefill" else targets.get(key)
    met = "" if ratio is None or target is None else ("yes" if ratio >= target else "no")
    fmt = lambda v: f"{v:,.1f}" if v else "-"
    print(f"| {label} | {fmt(a)} | {fmt(b)} | {f'{ratio:.2f}x' if ratio else '-'} | {f'>= {target}x' if target else '-'} | {met} |")

print("\n## Correctness against the CPU backend\n")
print("| check | device backend | max abs logit diff | greedy tokens equal | ok |")
print("| --- | --- | ---: | --- | --- |")
for p in sorted(glob.glob(os.path.join(out, "check-*.out"))):
    c = load(os.path.basename(p))
    name = os.path.basename(p)[len("check-"):-4]
    if c:
        print(f"| {name} | {c['device_backend']} | {c['max_abs_logit_diff']:.2e} | {c['greedy_equal']} | {c['ok']} |")
    else:
        print(f"| {name} | (failed: see {os.path.basename(p)[:-4]}.err) | - | - | - |")

try:
    with open(os.path.join(out, "cluster-vs-local.txt")) as f:
        verdict = f.read().strip()
except OSError:
    verdict = "not run"
print(f"\nCluster (prefill on {device}, decode on cpu) tokens vs the local CPU run: {verdict}")

print("\n## Steps (exit status)\n")
try:
    with open(os.path.join(out, "status.txt")) as f:
        for line in f:
            name, rc = line.split()
            print(f"- {name}: {'ok' if rc == '0' else 'exit ' + rc}")
except OSError:
    pass
