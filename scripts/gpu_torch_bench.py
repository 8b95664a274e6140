#!/usr/bin/env python3
"""PyTorch eager side of the GPU comparison (docs/GPU.md): transformers' LlamaForCausalLM in bf16,
default attention, on the same safetensors folder and the same shapes as `llmctl bench`:
prefill tokens/s for each --prefill length, and decode tokens/s for each --batches size at a
context of --context tokens (the same prompt for every sequence, greedy steps).

Prints one JSON object (and writes it to --out). --stand-in replaces the model with a tiny torch
module of the same calling convention, so the timing harness can be checked on a machine without
transformers (the CPU dry run of scripts/gpu-check.sh)."""
import argparse
import json
import sys
import time


def parse():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", help="Hugging Face folder (config.json + safetensors), e.g. from llmctl synth")
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--prefill", default="512,2048", help="prompt lengths, comma-separated")
    p.add_argument("--batches", default="1,16,64", help="decode batch sizes, comma-separated")
    p.add_argument("--context", type=int, default=512, help="prompt tokens before the decode steps")
    p.add_argument("--steps", type=int, default=64, help="decode steps per batch size")
    p.add_argument("--reps", type=int, default=3, help="prefill repetitions (best is kept)")
    p.add_argument("--stand-in", action="store_true", help="tiny stand-in model (checks the harness without transformers)")
    p.add_argument("--out", help="also write the JSON here")
    return p.parse_args()


def load(args, torch):
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    if args.stand_in:
        return StandIn(torch).to(args.device), 259, "stand-in"
    try:
        from transformers import LlamaForCausalLM  # default attention: whatever transformers picks (sdpa)
    except ImportError:
        # No transformers on the machine: the same eager computation written in plain PyTorch.
        import torch_llama
        model = torch_llama.load(args.model, dtype, args.device, torch)
        return model, model.vocab_size, f"plain PyTorch eager Llama {args.dtype} (scripts/torch_llama.py; transformers not installed)"
    try:
        model = LlamaForCausalLM.from_pretrained(args.model, dtype=dtype)  # transformers >= 4.56
    except TypeError:
        model = LlamaForCausalLM.from_pretrained(args.model, torch_dtype=dtype)
    model = model.to(args.device).eval()
    return model, model.config.vocab_size, f"transformers LlamaForCausalLM {args.dtype} ({model.config._attn_implementation})"


def StandIn(torch):
    class Tiny(torch.nn.Module):
        """Embedding -> linear, with a growing 'cache', called like a causal LM."""

        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(259, 32)
            self.out = torch.nn.Linear(32, 259)

        def forward(self, input_ids, past_key_values=None, use_cache=True):
            h = self.emb(input_ids)
            past = h if past_key_values is None else torch.cat([past_key_values, h], dim=1)
            return Out(self.out(h + past.mean(dim=1, keepdim=True)), past)

    class Out:
        def __init__(self, logits, past):
            self.logits, self.past_key_values = logits, past

    return Tiny()


def sync(torch, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main():
    args = parse()
    import torch
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: no CUDA device found: torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    if not args.stand_in and not args.model:
        print("error: --model is required (or --stand-in)", file=sys.stderr)
        return 2
    torch.manual_seed(1)
    model, vocab, name = load(args, torch)
    gen = torch.Generator().manual_seed(1)
    result = {"impl": name, "torch": torch.__version__, "device": args.device, "prefill": [], "decode": []}
    if args.device.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name()

    with torch.inference_mode():
        for n in [int(x) for x in args.prefill.split(",") if x]:
            ids = torch.randint(3, vocab, (1, n), generator=gen).to(args.device)
            model(ids, use_cache=True)  # warm-up (kernels, allocator)
            best = float("inf")
            for _ in range(args.reps):
                sync(torch, args.device)
                t = time.perf_counter()
                model(ids, use_cache=True)
                sync(torch, args.device)
                best = min(best, time.perf_counter() - t)
            result["prefill"].append({"tokens": n, "tokens_per_s": n / best, "seconds": best})

        prompt = torch.randint(3, vocab, (1, args.context), generator=gen)
        for b in [int(x) for x in args.batches.split(",") if x]:
            ids = prompt.expand(b, -1).contiguous().to(args.device)
            out = model(ids, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1, :].argmax(-1, keepdim=True)
            sync(torch, args.device)
            t = time.perf_counter()
            for _ in range(args.steps):
                out = model(nxt, past_key_values=past, use_cache=True)
                past, nxt = out.past_key_values, out.logits[:, -1, :].argmax(-1, keepdim=True)
            sync(torch, args.device)
            dt = time.perf_counter() - t
            result["decode"].append({"batch": b, "context": args.context, "steps": args.steps, "tokens_per_s": b * args.steps / dt})

    text = json.dumps(result)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
