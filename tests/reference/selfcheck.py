#!/usr/bin/python3
"""Self-checks for llama_ref.py and write_llama2c_v1.py. Rerun any time:

    /usr/bin/python3 tests/reference/selfcheck.py [--models DIR]

DIR defaults to /work/shared/models. Every check prints PASS/FAIL; the exit
code is non-zero if any failed. Temporary files go to a temp directory that is
removed afterwards.

What is being established, and why each check is independent evidence:
  1. Greedy text from stories260K matches the model card. That pins down the
     llama2.c loader, interleaved RoPE, GQA, RMSNorm and SwiGLU against
     a result published by the model's author.
  2. The same weights written as a Hugging Face folder (q/k rows permuted the
     way convert_llama_weights_to_hf.py does) give the same logits through the
     HF loader and the halves RoPE. The two RoPE conventions and two loaders
     are separate code, so agreement checks both; fp32, sharded, untied, bf16
     and f16 variants exercise each branch of the safetensors reader.
  3. write_llama2c_v1.py output loads to bit-identical weights.
  4. The perplexity window rule scores every token once, on a hand-worked case.
"""

import argparse
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import llama_ref as ref  # noqa: E402
import write_llama2c_v1  # noqa: E402

EXPECTED_PREFIX = ("Once upon a time, there was a little girl named Lily. "
                   "She loved to play outside in the park.")

failures = []


def check(name, ok, detail=""):
    print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f"  ({detail})" if detail else ""))
    if not ok:
        failures.append(name)


# --------------------------------------------------------------------------
# llama2.c tokenizer decoding (only what the greedy check needs)
# --------------------------------------------------------------------------


def load_llama2c_vocab(path):
    pieces = []
    with open(path, "rb") as f:
        struct.unpack("<i", f.read(4))  # max_token_length, unused for decoding
        while True:
            head = f.read(8)
            if len(head) < 8:
                break
            _score, n = struct.unpack("<fi", head)
            pieces.append(f.read(n))
    return pieces


def decode(pieces, ids, prev=ref.BOS_ID):
    """llama2.c's decode(): strip the dummy-prefix space after BOS; <0xXX> is a raw byte."""
    out = bytearray()
    for i in ids:
        p = pieces[i]
        if prev == ref.BOS_ID and p.startswith(b" "):
            p = p[1:]
        if len(p) == 6 and p.startswith(b"<0x") and p.endswith(b">"):
            p = bytes([int(p[3:5], 16)])
        out += p
        prev = i
    return out.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------
# Hugging Face folder writer (test-only)
# --------------------------------------------------------------------------


def to_bf16_bits(a32):
    """fp32 -> bf16 bit patterns, round to nearest even (what torch.to(bfloat16) does)."""
    u = np.ascontiguousarray(a32, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_round(a32):
    return (to_bf16_bits(a32).astype(np.uint32) << 16).view(np.float32)


def write_safetensors(path, tensors, dtype):
    """tensors: {name: float32 ndarray}; dtype: F32, F16 or BF16."""
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        if dtype == "F32":
            b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        elif dtype == "F16":
            b = np.ascontiguousarray(a, dtype="<f2").tobytes()
        else:
            b = to_bf16_bits(a).astype("<u2").tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    hj = json.dumps(header).encode("utf-8")
    hj += b" " * (-len(hj) % 8)  # HF pads the header so tensor data is 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def permute_for_hf(w, n_heads):
    """convert_llama_weights_to_hf.py's permute: interleaved-pair rows -> halves rows."""
    rows, cols = w.shape
    hd = rows // n_heads
    return w.reshape(n_heads, hd // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def hf_tensors_from(m, lm_head=None):
    """HF-named fp32 tensors from a llama2.c-loaded model (loaded as float32)."""
    n = lambda t: t.numpy().astype(np.float32)  # noqa: E731
    t = {"model.embed_tokens.weight": n(m.tok_emb)}
    for i, lw in enumerate(m.layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = n(lw.attn_norm)
        t[p + "self_attn.q_proj.weight"] = permute_for_hf(n(lw.wq), m.n_heads)
        t[p + "self_attn.k_proj.weight"] = permute_for_hf(n(lw.wk), m.n_kv_heads)
        t[p + "self_attn.v_proj.weight"] = n(lw.wv)
        t[p + "self_attn.o_proj.weight"] = n(lw.wo)
        t[p + "post_attention_layernorm.weight"] = n(lw.ffn_norm)
        t[p + "mlp.gate_proj.weight"] = n(lw.w1)
        t[p + "mlp.down_proj.weight"] = n(lw.w2)
        t[p + "mlp.up_proj.weight"] = n(lw.w3)
    t["model.norm.weight"] = n(m.final_norm)
    if lm_head is not None:
        t["lm_head.weight"] = lm_head
    return t


def hf_config(m, tied, rope_scaling=None):
    c = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": m.dim, "intermediate_size": m.hidden_dim,
        "num_hidden_layers": m.n_layers, "num_attention_heads": m.n_heads,
        "num_key_value_heads": m.n_kv_heads, "head_dim": m.head_dim,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": tied,
        "vocab_size": m.vocab_size, "max_position_embeddings": m.max_seq_len,
        "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
    }
    if rope_scaling is not None:
        c["rope_scaling"] = rope_scaling
    return c


def write_hf_folder(folder, config, tensors, dtype, shards=1):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    if shards == 1:
        write_safetensors(os.path.join(folder, "model.safetensors"), tensors, dtype)
        return
    names = list(tensors)
    weight_map = {}
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: tensors[k] for k in names[s::shards]}
        write_safetensors(os.path.join(folder, fname), part, dtype)
        weight_map.update({k: fname for k in part})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)


def write_legacy_untied(src, dst, wcls):
    """The tied stories260K file re-written with a negative vocab and an explicit wcls."""
    with open(src, "rb") as f:
        hdr = list(struct.unpack("<7i", f.read(28)))
        body = f.read()
    hdr[5] = -abs(hdr[5])
    with open(dst, "wb") as f:
        f.write(struct.pack("<7i", *hdr))
        f.write(body)
        f.write(np.ascontiguousarray(wcls, dtype="<f4").tobytes())


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def max_diff(a, b):
    return float((a.to(torch.float32) - b.to(torch.float32)).abs().max())


def same_weights(a, b):
    pairs = [(a.tok_emb, b.tok_emb), (a.final_norm, b.final_norm), (a.classifier, b.classifier)]
    for la, lb in zip(a.layers, b.layers):
        pairs += [(getattr(la, k), getattr(lb, k)) for k in vars(la)]
    return len(a.layers) == len(b.layers) and all(torch.equal(x, y) for x, y in pairs)


def round_model_bf16(m):
    """Rounds every weight of a float64 model through bf16, in place."""
    r = lambda t: torch.from_numpy(bf16_round(t.numpy().astype(np.float32)).astype(np.float64))  # noqa: E731
    tied = m.classifier is m.tok_emb
    m.tok_emb = r(m.tok_emb)
    m.final_norm = r(m.final_norm)
    m.classifier = m.tok_emb if tied else r(m.classifier)
    for lw in m.layers:
        for k in vars(lw):
            setattr(lw, k, r(getattr(lw, k)))
    return m


def run_cli(*args):
    cmd = [sys.executable, os.path.join(HERE, "llama_ref.py")] + list(args)
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


# --------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="/work/shared/models")
    a = ap.parse_args()
    legacy = os.path.join(a.models, "stories260K", "stories260K.bin")
    tok = os.path.join(a.models, "stories260K", "tok512.bin")
    tmp = tempfile.mkdtemp(prefix="llama_ref_selfcheck_")
    try:
        run_checks(legacy, tok, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{len(failures)} failure(s)" + (": " + ", ".join(failures) if failures else ""))
    return 1 if failures else 0


def run_checks(legacy, tok, tmp):
    m64 = ref.load_model(legacy)
    m32 = ref.load_model(legacy, torch.float32)  # raw weights, for writing other formats

    # 1. Greedy decode from BOS through the CLI, as a user would run it.
    out_ids = [int(t) for t in run_cli("greedy", "--model", legacy, "--steps", "60").split()]
    text = decode(load_llama2c_vocab(tok), out_ids)
    print(f"      greedy text: {text!r}")
    check("greedy 60 steps reproduces the stories260K model-card text",
          text.startswith(EXPECTED_PREFIX))

    # 50 tokens: BOS + seeded random ids, so every embedding row region is touched.
    rng = np.random.default_rng(1234)
    ids = [ref.BOS_ID] + [int(x) for x in rng.integers(0, m64.vocab_size, 49)]
    ids_file = os.path.join(tmp, "ids.txt")
    with open(ids_file, "w") as f:
        f.write(" ".join(map(str, ids)) + "\n")
    base = ref.forward(m64, ids)

    # The logits CLI writes exactly forward() as little-endian float32 [T, vocab].
    out_file = os.path.join(tmp, "legacy.f32")
    run_cli("logits", "--model", legacy, "--tokens-file", ids_file, "--out", out_file)
    cli = np.fromfile(out_file, dtype="<f4")
    check("logits CLI file is [T, vocab] float32 and equals forward()",
          cli.size == len(ids) * m64.vocab_size
          and np.array_equal(cli.reshape(len(ids), -1), base.to(torch.float32).numpy()))

    # 2a. HF fp32, single file, tied.
    hf32 = os.path.join(tmp, "hf_fp32")
    write_hf_folder(hf32, hf_config(m32, tied=True), hf_tensors_from(m32), "F32")
    hf_out = os.path.join(tmp, "hf.f32")
    run_cli("logits", "--model", hf32, "--tokens-file", ids_file, "--out", hf_out)
    d = float(np.abs(np.fromfile(hf_out, dtype="<f4") - cli).max())
    check("HF fp32 (tied, single file) logits == llama2.c logits to 1e-5", d <= 1e-5, f"max|diff|={d:.2e}")

    # Negative control: without the q/k row permutation the halves RoPE pairs
    # the wrong lanes, so the comparison above must be able to fail.
    hfnp = os.path.join(tmp, "hf_fp32_unpermuted")
    raw = hf_tensors_from(m32)
    for i, lw in enumerate(m32.layers):
        raw[f"model.layers.{i}.self_attn.q_proj.weight"] = lw.wq.numpy()
        raw[f"model.layers.{i}.self_attn.k_proj.weight"] = lw.wk.numpy()
    write_hf_folder(hfnp, hf_config(m32, tied=True), raw, "F32")
    d = max_diff(ref.forward(ref.load_model(hfnp), ids), base)
    check("negative control: unpermuted q/k in an HF folder gives different logits", d > 1e-2,
          f"max|diff|={d:.2e}")

    # 2b. HF fp32, sharded index, untied lm_head = 0.5 * embedding. Logits are
    # linear in the classifier, so they must be exactly half the tied ones.
    hfsh = os.path.join(tmp, "hf_fp32_sharded_untied")
    half = (m32.tok_emb.numpy() * 0.5).astype(np.float32)
    write_hf_folder(hfsh, hf_config(m32, tied=False), hf_tensors_from(m32, lm_head=half), "F32", shards=3)
    d = max_diff(ref.forward(ref.load_model(hfsh), ids), base * 0.5)
    check("HF fp32 (sharded, untied lm_head) logits == 0.5 * llama2.c logits to 1e-5", d <= 1e-5, f"max|diff|={d:.2e}")

    # 2c. HF bf16. The reference for it is the llama2.c model with every weight
    # rounded through bf16 the same way, so the comparison stays exact-ish.
    hfbf = os.path.join(tmp, "hf_bf16")
    write_hf_folder(hfbf, hf_config(m32, tied=True), hf_tensors_from(m32), "BF16")
    bf_logits = ref.forward(ref.load_model(hfbf), ids)
    bf_base = ref.forward(round_model_bf16(ref.load_model(legacy)), ids)
    d = max_diff(bf_logits, bf_base)
    check("HF bf16 logits == bf16-rounded llama2.c logits to 1e-5", d <= 1e-5, f"max|diff|={d:.2e}")
    print(f"      (bf16 vs fp32 weights, for scale: max|diff|={max_diff(bf_logits, base):.3f})")

    # 2d. HF f16: only the reader's F16 branch is new, so compare weights.
    hff16 = os.path.join(tmp, "hf_f16")
    tensors = hf_tensors_from(m32)
    write_hf_folder(hff16, hf_config(m32, tied=True), tensors, "F16")
    mf16 = ref.load_model(hff16, torch.float32)
    w = tensors["model.layers.2.mlp.down_proj.weight"].astype(np.float16).astype(np.float32)
    check("HF f16 tensors load as the float16-rounded values",
          np.array_equal(mf16.layers[2].w2.numpy(), w))

    # 2e. Greedy through the HF path agrees with the llama2.c path.
    g_hf = ref.greedy(ref.load_model(hf32), 30)
    check("greedy 30 steps: HF path == llama2.c path", g_hf == out_ids[:30])

    # 2f. rope_scaling llama3. (i) A config where every frequency is "high" must
    # leave logits unchanged (plumbing). (ii) Non-trivial factors versus a
    # scalar re-derivation of the HF formula, band by band.
    no_op = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
             "high_freq_factor": 4.0, "original_max_position_embeddings": 10 ** 6}
    hfl3 = os.path.join(tmp, "hf_llama3_noop")
    write_hf_folder(hfl3, hf_config(m32, tied=True, rope_scaling=no_op), hf_tensors_from(m32), "F32")
    d = max_diff(ref.forward(ref.load_model(hfl3), ids), base)
    check("llama3 rope_scaling with all-high frequencies leaves logits unchanged", d <= 1e-5, f"max|diff|={d:.2e}")

    sc = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    got = ref.llama3_inv_freq(ref.default_inv_freq(8, 10000.0), sc).tolist()
    want = []
    for i in range(4):
        f = 10000.0 ** (-2 * i / 8)
        wl = 2 * math.pi / f
        if wl < 64 / 4:
            want.append(f)  # high frequency: kept
        elif wl > 64 / 1:
            want.append(f / 8)  # low frequency: divided by factor
        else:
            s = (64 / wl - 1) / (4 - 1)
            want.append((1 - s) * f / 8 + s * f)
    check("llama3 inv_freq matches a per-band scalar derivation",
          all(abs(g - w_) <= 1e-15 * max(1.0, abs(w_)) for g, w_ in zip(got, want)),
          f"got={['%.6g' % x for x in got]}")
    # A type string "type" (older configs) must be honoured as well as "rope_type".
    hfl3b = os.path.join(tmp, "hf_llama3_type_key")
    sc_old = dict(sc, type="llama3")
    write_hf_folder(hfl3b, hf_config(m32, tied=True, rope_scaling=sc_old), hf_tensors_from(m32), "F32")
    check("rope_scaling {'type': 'llama3'} is applied",
          torch.allclose(ref.load_model(hfl3b).inv_freq, torch.tensor(want, dtype=torch.float64)))

    # 3. Version-1 writer round trip, tied and untied.
    v1 = os.path.join(tmp, "v1.bin")
    write_llama2c_v1.convert(legacy, v1)
    mv1 = ref.load_model(v1)
    check("v1 (tied) loads to identical weights and logits",
          mv1.meta["format"] == "llama2c-v1" and same_weights(m64, mv1) and torch.equal(ref.forward(mv1, ids), base))
    check("v1 (tied) file size is 256 + 4*(floats - freq_cis tables)",
          os.path.getsize(v1) == 256 + os.path.getsize(legacy) - 28 - 4 * 2 * m64.max_seq_len * m64.head_dim // 2,
          f"{os.path.getsize(v1)} bytes")

    untied = os.path.join(tmp, "legacy_untied.bin")
    write_legacy_untied(legacy, untied, half)
    mu = ref.load_model(untied)
    d = max_diff(ref.forward(mu, ids), base * 0.5)
    check("legacy untied (negative vocab + wcls) logits == 0.5 * tied", d <= 1e-5, f"max|diff|={d:.2e}")
    v1u = os.path.join(tmp, "v1_untied.bin")
    write_llama2c_v1.convert(untied, v1u)
    mv1u = ref.load_model(v1u)
    check("v1 (untied) loads to identical weights",
          not mv1u.meta["shared_classifier"] and same_weights(mu, mv1u))

    # 4. Perplexity rule.
    long_ids = [ref.BOS_ID] + [int(x) for x in rng.integers(0, m64.vocab_size, 299)]
    N = len(long_ids)
    full = torch.log_softmax(ref.forward(m64, long_ids), -1)
    direct = float(-full[torch.arange(N - 1), torch.tensor(long_ids[1:])].sum())
    r = ref.perplexity(m64, long_ids, window=N)
    check("perplexity with window >= N equals a direct full-sequence sum",
          r["tokens_scored"] == N - 1 and abs(r["nll_sum"] - direct) <= 1e-9 * abs(direct),
          f"ppl={r['perplexity']:.4f}")
    for W, S in [(64, 32), (64, 63), (100, 7), (512, 256)]:
        r = ref.perplexity(m64, long_ids, window=W, stride=S)
        check(f"perplexity W={W} S={S} scores each token once", r["tokens_scored"] == N - 1,
              f"scored={r['tokens_scored']}")

    # Hand-worked: N=10, W=4, S=2 -> windows [0,4) scores 1..3, [2,6) 4..5,
    # [4,8) 6..7, [6,10) 8..9, then end == N stops the loop.
    small = long_ids[:10]
    plan = [(0, [1, 2, 3]), (2, [4, 5]), (4, [6, 7]), (6, [8, 9])]
    want = 0.0
    for begin, targets in plan:
        lp = torch.log_softmax(ref.forward(m64, small[begin:begin + 4]), -1)
        want += sum(float(-lp[t - 1 - begin, small[t]]) for t in targets)
    r = ref.perplexity(m64, small, window=4, stride=2)
    check("perplexity N=10 W=4 S=2 equals the hand-enumerated windows",
          r["tokens_scored"] == 9 and abs(r["nll_sum"] - want) <= 1e-12 * abs(want))

    # The CLI's JSON and defaults (W = seq_len = 512, S = 256).
    with open(ids_file, "w") as f:
        f.write("\n".join(map(str, long_ids)))
    j = json.loads(run_cli("perplexity", "--model", legacy, "--tokens-file", ids_file))
    check("perplexity CLI prints the JSON fields with default window",
          set(j) == {"perplexity", "nll_sum", "tokens_scored"} and j["tokens_scored"] == N - 1
          and abs(j["nll_sum"] - direct) <= 1e-9 * abs(direct))


if __name__ == "__main__":
    sys.exit(main())
