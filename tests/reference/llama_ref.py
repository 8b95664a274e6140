#!/usr/bin/python3
"""Independent PyTorch reference for the Llama forward pass.

This file exists so the C# engine's numbers can be cross-checked against code
that shares nothing with it: it is written straight from the published file
formats and the Llama architecture, in plain torch + numpy, and computes in
float64 by default so that any disagreement beyond float32 round-off points at
the engine, not at the reference.

Supported inputs:
  * llama2.c checkpoints, legacy (version 0) and version 1 ("ak42") layouts;
  * Hugging Face LlamaForCausalLM folders (config.json + model.safetensors or a
    sharded model.safetensors.index.json), F32 / F16 / BF16 tensors.

Run with Debian's /usr/bin/python3 (apt python3-torch, python3-numpy); nothing
else is needed. See README.md in this folder for the CLI.
"""

import argparse
import json
import math
import os
import struct
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch

BOS_ID = 1
LLAMA2C_V1_MAGIC = 0x616B3432  # "ak42" read as a little-endian uint32
LLAMA2C_V1_HEADER_BYTES = 256

ROPE_INTERLEAVED = "interleaved"  # llama2.c / Meta: rotates (x[2i], x[2i+1])
ROPE_HALVES = "halves"  # Hugging Face: rotates (x[i], x[i + head_dim/2])


# --------------------------------------------------------------------------
# Model container
# --------------------------------------------------------------------------


@dataclass
class LayerWeights:
    attn_norm: torch.Tensor  # [dim]
    wq: torch.Tensor  # [n_heads*head_dim, dim]   (out, in) like nn.Linear
    wk: torch.Tensor  # [n_kv_heads*head_dim, dim]
    wv: torch.Tensor  # [n_kv_heads*head_dim, dim]
    wo: torch.Tensor  # [dim, n_heads*head_dim]
    ffn_norm: torch.Tensor  # [dim]
    w1: torch.Tensor  # gate [hidden, dim]
    w2: torch.Tensor  # down [dim, hidden]
    w3: torch.Tensor  # up   [hidden, dim]


@dataclass
class Model:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    max_seq_len: int  # training context; default perplexity window
    norm_eps: float
    rope_style: str
    inv_freq: torch.Tensor  # [head_dim/2] float64, already rope-scaled
    tok_emb: torch.Tensor  # [vocab, dim]
    layers: List[LayerWeights]
    final_norm: torch.Tensor  # [dim]
    classifier: torch.Tensor  # [vocab, dim]; same object as tok_emb when tied
    meta: Dict[str, object] = field(default_factory=dict)


def _to_torch(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    # np.array(..., copy) detaches from a read-only memmap, which torch rejects.
    return torch.from_numpy(np.array(a, dtype=np.float64 if dtype == torch.float64 else np.float32))


# --------------------------------------------------------------------------
# RoPE frequencies
# --------------------------------------------------------------------------


def default_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    # theta^(-2i/head_dim) for i in [0, head_dim/2): identical in llama2.c and HF.
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))


def llama3_inv_freq(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    """Hugging Face `_compute_llama3_parameters`, transcribed.

    Low frequencies (long wavelengths) are divided by `factor`, high ones kept,
    and the band between is a linear blend in 1/wavelength. The attention
    scaling factor for llama3 is 1.0, so nothing else changes.
    """
    factor = float(scaling["factor"])
    low_freq_factor = float(scaling["low_freq_factor"])
    high_freq_factor = float(scaling["high_freq_factor"])
    old_context_len = float(scaling["original_max_position_embeddings"])

    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq

    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, inv_freq_llama)


# --------------------------------------------------------------------------
# llama2.c loaders
# --------------------------------------------------------------------------


def load_llama2c(path: str, dtype: torch.dtype = torch.float64) -> Model:
    with open(path, "rb") as f:
        head = f.read(LLAMA2C_V1_HEADER_BYTES)
    (magic,) = struct.unpack_from("<I", head, 0)
    is_v1 = magic == LLAMA2C_V1_MAGIC

    if is_v1:
        (version,) = struct.unpack_from("<i", head, 4)
        if version != 1:
            raise ValueError(f"{path}: llama2.c version {version} not supported (only 0 and 1)")
        dim, hidden, L, H, KV, vocab, seq_len = struct.unpack_from("<7i", head, 8)
        shared = struct.unpack_from("<B", head, 36)[0] != 0
        offset = LLAMA2C_V1_HEADER_BYTES
    else:
        dim, hidden, L, H, KV, vocab, seq_len = struct.unpack_from("<7i", head, 0)
        # Legacy files signal an untied classifier by a negative vocab size.
        shared = vocab > 0
        vocab = abs(vocab)
        offset = 7 * 4

    hd = dim // H
    kv_dim = KV * hd
    data = np.memmap(path, dtype="<f4", mode="r", offset=offset)
    pos = [0]

    def take(shape):
        n = int(np.prod(shape))
        if pos[0] + n > data.size:
            raise ValueError(f"{path}: file too short for a tensor of shape {shape}")
        t = _to_torch(data[pos[0]:pos[0] + n].reshape(shape), dtype)
        pos[0] += n
        return t

    if is_v1:
        attn_norms = take((L, dim))
        ffn_norms = take((L, dim))
        final_norm = take((dim,))
        tok_emb = take((vocab, dim))
        mats = {}
        for name, shape in [("wq", (dim, dim)), ("wk", (kv_dim, dim)), ("wv", (kv_dim, dim)),
                            ("wo", (dim, dim)), ("w1", (hidden, dim)), ("w2", (dim, hidden)),
                            ("w3", (hidden, dim))]:
            mats[name] = take((L,) + shape)
        layers = [LayerWeights(attn_norm=attn_norms[i], ffn_norm=ffn_norms[i],
                               **{k: v[i] for k, v in mats.items()}) for i in range(L)]
    else:
        tok_emb = take((vocab, dim))
        attn_norms = take((L, dim))
        mats = {}
        for name, shape in [("wq", (dim, dim)), ("wk", (kv_dim, dim)), ("wv", (kv_dim, dim)),
                            ("wo", (dim, dim))]:
            mats[name] = take((L,) + shape)
        ffn_norms = take((L, dim))
        for name, shape in [("w1", (hidden, dim)), ("w2", (dim, hidden)), ("w3", (hidden, dim))]:
            mats[name] = take((L,) + shape)
        final_norm = take((dim,))
        # The legacy RoPE tables are skipped, as llama2.c's run.c does: the
        # frequencies are recomputed below from theta=10000.
        pos[0] += 2 * seq_len * hd // 2
        layers = [LayerWeights(attn_norm=attn_norms[i], ffn_norm=ffn_norms[i],
                               **{k: v[i] for k, v in mats.items()}) for i in range(L)]

    classifier = tok_emb if shared else take((vocab, dim))
    if pos[0] != data.size:
        # Trailing data means the header and the layout disagree; better to
        # fail than to compare against a silently misparsed model.
        raise ValueError(f"{path}: {data.size - pos[0]} unread floats after the weights")

    return Model(dim=dim, hidden_dim=hidden, n_layers=L, n_heads=H, n_kv_heads=KV, head_dim=hd,
                 vocab_size=vocab, max_seq_len=seq_len, norm_eps=1e-5, rope_style=ROPE_INTERLEAVED,
                 inv_freq=default_inv_freq(hd, 10000.0), tok_emb=tok_emb, layers=layers,
                 final_norm=final_norm, classifier=classifier,
                 meta=dict(format="llama2c-v1" if is_v1 else "llama2c-legacy", shared_classifier=shared))


# --------------------------------------------------------------------------
# Hugging Face safetensors loader
# --------------------------------------------------------------------------


class SafetensorsFile:
    """Minimal safetensors reader: header parsed by hand, data memory-mapped."""

    def __init__(self, path: str):
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n).decode("utf-8"))
        header.pop("__metadata__", None)
        self.path = path
        self.entries = header
        self.data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)

    def names(self):
        return self.entries.keys()

    def get(self, name: str) -> np.ndarray:
        e = self.entries[name]
        begin, end = e["data_offsets"]
        raw = self.data[begin:end]
        shape = tuple(e["shape"])
        dt = e["dtype"]
        if dt == "F32":
            a = raw.view("<f4")
        elif dt == "F16":
            a = raw.view("<f2").astype(np.float32)
        elif dt == "BF16":
            # bf16 is the top half of an fp32: widening is exact.
            a = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{self.path}: tensor {name} has unsupported dtype {dt}")
        if a.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"{self.path}: tensor {name} byte size does not match shape {shape}")
        return a.reshape(shape)


def _open_hf_tensors(folder: str) -> Dict[str, SafetensorsFile]:
    """Maps every tensor name to the safetensors file that holds it."""
    index_path = os.path.join(folder, "model.safetensors.index.json")
    single_path = os.path.join(folder, "model.safetensors")
    where: Dict[str, SafetensorsFile] = {}
    if os.path.exists(index_path):
        with open(index_path) as f:
            weight_map = json.load(f)["weight_map"]
        files: Dict[str, SafetensorsFile] = {}
        for name, fname in weight_map.items():
            if fname not in files:
                files[fname] = SafetensorsFile(os.path.join(folder, fname))
            if name not in files[fname].entries:
                raise ValueError(f"index says {name} is in {fname}, but it is not")
            where[name] = files[fname]
    elif os.path.exists(single_path):
        st = SafetensorsFile(single_path)
        where = {name: st for name in st.names()}
    else:
        raise FileNotFoundError(f"{folder}: no model.safetensors or model.safetensors.index.json")
    return where


def load_hf(folder: str, dtype: torch.dtype = torch.float64) -> Model:
    with open(os.path.join(folder, "config.json")) as f:
        c = json.load(f)
    if c.get("model_type", "llama") != "llama":
        raise ValueError(f"model_type {c.get('model_type')!r} is not llama")
    if c.get("attention_bias") or c.get("mlp_bias"):
        # Not needed for any Llama we test; refusing beats silently ignoring.
        raise NotImplementedError("attention_bias / mlp_bias are not supported")

    dim = c["hidden_size"]
    H = c["num_attention_heads"]
    KV = c.get("num_key_value_heads") or H
    hd = c.get("head_dim") or dim // H
    L = c["num_hidden_layers"]
    # LlamaConfig's own defaults, used when the key is absent.
    eps = c.get("rms_norm_eps", 1e-6)
    theta = c.get("rope_theta", 10000.0)
    tied = c.get("tie_word_embeddings", False)

    inv_freq = default_inv_freq(hd, theta)
    scaling = c.get("rope_scaling")
    if scaling:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind == "llama3":
            inv_freq = llama3_inv_freq(inv_freq, scaling)
        elif kind == "linear":
            # HF linear scaling: positions divided by factor == inv_freq divided by factor.
            inv_freq = inv_freq / float(scaling["factor"])
        elif kind not in (None, "default"):
            raise NotImplementedError(f"rope_scaling type {kind!r} not supported")

    where = _open_hf_tensors(folder)

    def get(name, shape):
        if name not in where:
            raise KeyError(f"{folder}: missing tensor {name}")
        a = where[name].get(name)
        if tuple(a.shape) != tuple(shape):
            raise ValueError(f"{name}: shape {tuple(a.shape)}, expected {tuple(shape)}")
        return _to_torch(a, dtype)

    vocab = c["vocab_size"]
    inter = c["intermediate_size"]
    tok_emb = get("model.embed_tokens.weight", (vocab, dim))
    layers = []
    for i in range(L):
        p = f"model.layers.{i}."
        layers.append(LayerWeights(
            attn_norm=get(p + "input_layernorm.weight", (dim,)),
            wq=get(p + "self_attn.q_proj.weight", (H * hd, dim)),
            wk=get(p + "self_attn.k_proj.weight", (KV * hd, dim)),
            wv=get(p + "self_attn.v_proj.weight", (KV * hd, dim)),
            wo=get(p + "self_attn.o_proj.weight", (dim, H * hd)),
            ffn_norm=get(p + "post_attention_layernorm.weight", (dim,)),
            w1=get(p + "mlp.gate_proj.weight", (inter, dim)),
            w2=get(p + "mlp.down_proj.weight", (dim, inter)),
            w3=get(p + "mlp.up_proj.weight", (inter, dim)),
        ))
    final_norm = get("model.norm.weight", (dim,))
    if tied:
        # HF ties lm_head to the embedding even if a stale lm_head.weight is stored.
        classifier = tok_emb
    elif "lm_head.weight" in where:
        classifier = get("lm_head.weight", (vocab, dim))
    else:
        raise KeyError(f"{folder}: tie_word_embeddings is false but lm_head.weight is missing")

    return Model(dim=dim, hidden_dim=inter, n_layers=L, n_heads=H, n_kv_heads=KV, head_dim=hd,
                 vocab_size=vocab, max_seq_len=c.get("max_position_embeddings", 2048), norm_eps=eps,
                 rope_style=ROPE_HALVES, inv_freq=inv_freq, tok_emb=tok_emb, layers=layers,
                 final_norm=final_norm, classifier=classifier,
                 meta=dict(format="hf", tied=tied))


def load_model(path: str, dtype: torch.dtype = torch.float64) -> Model:
    return load_hf(path, dtype) if os.path.isdir(path) else load_llama2c(path, dtype)


# --------------------------------------------------------------------------
# Forward pass
# --------------------------------------------------------------------------


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, style: str) -> torch.Tensor:
    """x: [T, heads, head_dim]; cos/sin: [T, head_dim/2] for frequency index i."""
    cos = cos[:, None, :]
    sin = sin[:, None, :]
    if style == ROPE_INTERLEAVED:
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
    if style == ROPE_HALVES:
        half = x.shape[-1] // 2
        a, b = x[..., :half], x[..., half:]
        return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)
    raise ValueError(style)


@torch.no_grad()
def forward(m: Model, ids: List[int]) -> torch.Tensor:
    """Logits [T, vocab] for tokens at positions 0..T-1, from an empty cache.

    Deliberately no KV cache: the whole sequence is recomputed, which is slow
    but leaves nothing stateful to get wrong.
    """
    T = len(ids)
    if T == 0:
        return torch.zeros((0, m.vocab_size), dtype=m.tok_emb.dtype)
    dt = m.tok_emb.dtype
    x = m.tok_emb[torch.tensor(ids, dtype=torch.long)]

    # Angles in float64 regardless of dt: they are the reference's ground truth.
    angles = torch.arange(T, dtype=torch.float64)[:, None] * m.inv_freq[None, :]
    cos, sin = torch.cos(angles).to(dt), torch.sin(angles).to(dt)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    group = m.n_heads // m.n_kv_heads
    scale = 1.0 / math.sqrt(m.head_dim)

    for lw in m.layers:
        n = rms_norm(x, lw.attn_norm, m.norm_eps)
        q = (n @ lw.wq.T).view(T, m.n_heads, m.head_dim)
        k = (n @ lw.wk.T).view(T, m.n_kv_heads, m.head_dim)
        v = (n @ lw.wv.T).view(T, m.n_kv_heads, m.head_dim)
        q = apply_rope(q, cos, sin, m.rope_style)
        k = apply_rope(k, cos, sin, m.rope_style)
        # GQA: query head h reads kv head h // group; repeat_interleave gives exactly that.
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        scores = torch.einsum("thd,shd->hts", q, k) * scale
        scores = scores.masked_fill(~causal, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        att = torch.einsum("hts,shd->thd", probs, v).reshape(T, m.n_heads * m.head_dim)
        x = x + att @ lw.wo.T

        n = rms_norm(x, lw.ffn_norm, m.norm_eps)
        x = x + (torch.nn.functional.silu(n @ lw.w1.T) * (n @ lw.w3.T)) @ lw.w2.T

    x = rms_norm(x, m.final_norm, m.norm_eps)
    return x @ m.classifier.T


# --------------------------------------------------------------------------
# Perplexity and greedy decoding
# --------------------------------------------------------------------------


def perplexity(m: Model, ids: List[int], window: Optional[int] = None, stride: Optional[int] = None) -> dict:
    """Sliding-window perplexity; the exact rule the C# engine must match.

    Each window starts from an empty cache at position 0. A target token t is
    scored by the first window that contains both t and t-1 and has not already
    been passed, so every token 1..N-1 is scored exactly once.
    """
    N = len(ids)
    W = window or m.max_seq_len
    S = stride or W // 2
    if W < 2 or S < 1:
        raise ValueError("window must be >= 2 and stride >= 1")
    nll_sum = 0.0
    scored = 0
    prev_end = 0
    for begin in range(0, N, S):
        end = min(begin + W, N)
        first = max(prev_end, begin + 1)
        if first < end:
            logits = forward(m, ids[begin:end]).to(torch.float64)
            logp = torch.log_softmax(logits, dim=-1)
            targets = torch.tensor(ids[first:end], dtype=torch.long)
            rows = torch.arange(first - 1, end - 1) - begin
            nll_sum += float(-logp[rows, targets].sum())
            scored += end - first
        prev_end = end
        if end == N:
            break
    ppl = math.exp(nll_sum / scored) if scored else float("nan")
    return {"perplexity": ppl, "nll_sum": nll_sum, "tokens_scored": scored}


@torch.no_grad()
def sink_window_logits(m: Model, ids: List[int], sinks: int, window: int) -> torch.Tensor:
    """StreamingLLM (Xiao et al. 2023, section 3.2), token by token: logits [T, vocab].

    Keeps the pre-RoPE keys and the values of the first `sinks` and the last
    `window` tokens per layer, and at every step rotates the n cached keys by
    their cache index 0..n-1 and the new query by n-1, recomputing attention
    from those stored keys. Written independently of the engine, which
    instead re-rotates post-RoPE keys in place when they move.
    """
    dt = m.tok_emb.dtype
    group = m.n_heads // m.n_kv_heads
    scale = 1.0 / math.sqrt(m.head_dim)
    keys = [[] for _ in m.layers]  # per layer: list of [kv_heads, head_dim] pre-RoPE
    values = [[] for _ in m.layers]
    out = []
    for token in ids:
        x = m.tok_emb[token][None, :]
        for li, lw in enumerate(m.layers):
            n = rms_norm(x, lw.attn_norm, m.norm_eps)
            q = (n @ lw.wq.T).view(1, m.n_heads, m.head_dim)
            keys[li].append((n @ lw.wk.T).view(m.n_kv_heads, m.head_dim))
            values[li].append((n @ lw.wv.T).view(m.n_kv_heads, m.head_dim))
            if len(keys[li]) > sinks + window:
                del keys[li][sinks]
                del values[li][sinks]
            cached = len(keys[li])
            angles = torch.arange(cached, dtype=torch.float64)[:, None] * m.inv_freq[None, :]
            cos, sin = torch.cos(angles).to(dt), torch.sin(angles).to(dt)
            k = apply_rope(torch.stack(keys[li]), cos, sin, m.rope_style)  # [n, kv, hd]
            q = apply_rope(q, cos[-1:], sin[-1:], m.rope_style)
            v = torch.stack(values[li])
            k = k.repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)
            probs = torch.softmax(torch.einsum("hd,shd->hs", q[0], k) * scale, dim=-1)
            att = torch.einsum("hs,shd->hd", probs, v).reshape(1, m.n_heads * m.head_dim)
            x = x + att @ lw.wo.T
            n = rms_norm(x, lw.ffn_norm, m.norm_eps)
            x = x + (torch.nn.functional.silu(n @ lw.w1.T) * (n @ lw.w3.T)) @ lw.w2.T
        out.append((rms_norm(x, m.final_norm, m.norm_eps) @ m.classifier.T)[0])
    return torch.stack(out)


def qfilter_of(queries: np.ndarray) -> np.ndarray:
    """Q-Filters (Godey et al. 2025) for one head from its sampled queries [n, head_dim], by numpy's
    SVD: v the first right singular vector, s = +1 when most entries of the first left singular
    vector are positive (else -1), filter = -s * v (DESIGN.md)."""
    u, _, vt = np.linalg.svd(queries.astype(np.float64), full_matrices=False)
    s = 1.0 if (u[:, 0] > 0).sum() > queries.shape[0] / 2 else -1.0
    return -s * vt[0]


def greedy(m: Model, steps: int, prompt: Optional[List[int]] = None) -> List[int]:
    ids = list(prompt) if prompt else [BOS_ID]
    out = []
    for _ in range(steps):
        if len(ids) >= m.max_seq_len:
            break
        nxt = int(torch.argmax(forward(m, ids)[-1]))
        out.append(nxt)
        ids.append(nxt)
    return out


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def read_ids(path: str) -> List[int]:
    with open(path) as f:
        return [int(t) for t in f.read().split()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--model", required=True, help="llama2.c .bin file or Hugging Face folder")
        p.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                       help="compute precision (float64 unless memory forbids it)")

    p = sub.add_parser("logits", help="write float32 logits [T, vocab] row-major, little-endian")
    common(p)
    p.add_argument("--tokens-file", required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("perplexity", help="print JSON {perplexity, nll_sum, tokens_scored}")
    common(p)
    p.add_argument("--tokens-file", required=True)
    p.add_argument("--window", type=int, default=None)
    p.add_argument("--stride", type=int, default=None)

    p = sub.add_parser("sink-window", help="write float32 logits [T, vocab] of StreamingLLM token by token")
    common(p)
    p.add_argument("--tokens-file", required=True)
    p.add_argument("--sinks", type=int, required=True)
    p.add_argument("--window", type=int, required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("qfilter", help="write the Q-Filter [head_dim] of a float32 query matrix [n, head_dim]")
    p.add_argument("--queries", required=True)
    p.add_argument("--head-dim", type=int, required=True)
    p.add_argument("--out", required=True)

    p = sub.add_parser("greedy", help="print greedily generated ids starting from BOS")
    common(p)
    p.add_argument("--steps", type=int, required=True)

    a = ap.parse_args(argv)
    if a.cmd == "qfilter":
        q = np.fromfile(a.queries, dtype="<f4").reshape(-1, a.head_dim)
        qfilter_of(q).astype("<f4").tofile(a.out)
        return 0
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    m = load_model(a.model, torch.float64 if a.dtype == "float64" else torch.float32)

    if a.cmd == "logits":
        ids = read_ids(a.tokens_file)
        logits = forward(m, ids).to(torch.float32).numpy()
        logits.astype("<f4").tofile(a.out)
    elif a.cmd == "perplexity":
        print(json.dumps(perplexity(m, read_ids(a.tokens_file), a.window, a.stride)))
    elif a.cmd == "sink-window":
        logits = sink_window_logits(m, read_ids(a.tokens_file), a.sinks, a.window)
        logits.to(torch.float32).numpy().astype("<f4").tofile(a.out)
    elif a.cmd == "greedy":
        print(" ".join(str(i) for i in greedy(m, a.steps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
