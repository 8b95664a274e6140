"""A plain PyTorch eager Llama for the GPU comparison when `transformers` is not installed.

It reads the same Hugging Face folder (config.json + model.safetensors, parsed here so that the
`safetensors` package is not needed either) and is called like LlamaForCausalLM: model(ids,
past_key_values=..., use_cache=True) returns .logits for every position and .past_key_values.
The work per call is what transformers' eager model does in bf16: F.linear for every projection,
RMSNorm in fp32, rotate-half RoPE, scaled_dot_product_attention (a manual softmax on old torch),
SwiGLU, logits for all positions, and a cache grown by torch.cat. Llama 3 RoPE scaling is left out:
it changes the frequencies, not the cost."""
import json
import os
import struct

DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


def read_safetensors(path, torch):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = bytearray(f.read())
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = getattr(torch, DTYPES[info["dtype"]])
        t = torch.frombuffer(data, dtype=torch.uint8, offset=begin, count=end - begin)
        out[name] = t.view(dtype).reshape(info["shape"])
    return out


class Output:
    def __init__(self, logits, past):
        self.logits, self.past_key_values = logits, past


def load(folder, dtype, device, torch):
    cfg = json.load(open(os.path.join(folder, "config.json")))
    w = {k: v.to(device=device, dtype=dtype) for k, v in read_safetensors(os.path.join(folder, "model.safetensors"), torch).items()}
    return TorchLlama(cfg, w, torch)


class TorchLlama:
    def __init__(self, cfg, w, torch):
        self.torch, self.F = torch, torch.nn.functional
        self.cfg, self.w = cfg, w
        self.heads, self.kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        self.head_dim = cfg.get("head_dim") or cfg["hidden_size"] // self.heads
        self.layers, self.eps = cfg["num_hidden_layers"], cfg["rms_norm_eps"]
        self.vocab_size = cfg["vocab_size"]
        self.lm_head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
        device = w["model.embed_tokens.weight"].device
        self.inv_freq = 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, self.head_dim, 2, device=device).float() / self.head_dim))
        self.sdpa = getattr(self.F, "scaled_dot_product_attention", None)

    def norm(self, x, weight):
        x32 = x.float()
        x32 = x32 * self.torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * x32.to(x.dtype)

    def rope(self, x, cos, sin):
        half = x.shape[-1] // 2
        rotated = self.torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def attend(self, q, k, v, causal):
        groups = self.heads // self.kv_heads
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
        if self.sdpa is not None:
            return self.sdpa(q, k, v, is_causal=causal)
        s = (q @ k.transpose(-1, -2)).float() / self.head_dim ** 0.5
        if causal:
            t = q.shape[-2]
            mask = self.torch.ones(t, k.shape[-2], dtype=self.torch.bool, device=q.device).tril(k.shape[-2] - t)
            s = s.masked_fill(~mask, float("-inf"))
        return (s.softmax(-1).to(v.dtype)) @ v

    def __call__(self, input_ids, past_key_values=None, use_cache=True):
        torch, F, w = self.torch, self.F, self.w
        b, t = input_ids.shape
        past = past_key_values or [None] * self.layers
        start = 0 if past[0] is None else past[0][0].shape[-2]
        pos = torch.arange(start, start + t, device=input_ids.device).float()
        freqs = torch.outer(pos, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        x = w["model.embed_tokens.weight"][input_ids]
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        new_past = []
        for l in range(self.layers):
            p = f"model.layers.{l}."
            h = self.norm(x, w[p + "input_layernorm.weight"])
            q = F.linear(h, w[p + "self_attn.q_proj.weight"]).view(b, t, self.heads, self.head_dim).transpose(1, 2)
            k = F.linear(h, w[p + "self_attn.k_proj.weight"]).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
            v = F.linear(h, w[p + "self_attn.v_proj.weight"]).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
            if past[l] is not None:
                k = torch.cat((past[l][0], k), dim=-2)
                v = torch.cat((past[l][1], v), dim=-2)
            new_past.append((k, v))
            a = self.attend(q, k, v, causal=t > 1).transpose(1, 2).reshape(b, t, self.heads * self.head_dim)
            x = x + F.linear(a, w[p + "self_attn.o_proj.weight"])
            h = self.norm(x, w[p + "post_attention_layernorm.weight"])
            x = x + F.linear(F.silu(F.linear(h, w[p + "mlp.gate_proj.weight"])) * F.linear(h, w[p + "mlp.up_proj.weight"]), w[p + "mlp.down_proj.weight"])
        logits = F.linear(self.norm(x, w["model.norm.weight"]), self.lm_head).float()
        return Output(logits, new_past)
