#!/usr/bin/python3
"""Convert a llama2.c legacy (version 0) checkpoint to llama2.c version-1 format.

Usage: /usr/bin/python3 write_llama2c_v1.py LEGACY.bin OUT.bin

Exists because only the legacy stories260K file is available here, while the
C# loader also has to read version-1 files. The layout written is the one of
llama2.c's export.py `version1_export`: a 256-byte header (magic "ak42",
version 1, 7 int32 params with a positive vocab size, uint8 shared_classifier,
zero padding), then fp32 tensors grouped by kind across layers. The legacy
freq_cis tables are dropped, as version 1 has none.

Works on raw float32 slices of the input file, so the output holds bit-for-bit
the same weights; no torch is needed.
"""

import struct
import sys

import numpy as np

MAGIC = 0x616B3432
HEADER_BYTES = 256


def convert(src: str, dst: str) -> None:
    with open(src, "rb") as f:
        dim, hidden, L, H, KV, vocab, seq_len = struct.unpack("<7i", f.read(28))
    shared = vocab > 0
    vocab = abs(vocab)
    hd = dim // H
    kv_dim = KV * hd
    data = np.fromfile(src, dtype="<f4", offset=28)

    # Slice the legacy file in its own order.
    legacy_order = [
        ("tok_emb", vocab * dim), ("rms_att", L * dim), ("wq", L * dim * dim),
        ("wk", L * kv_dim * dim), ("wv", L * kv_dim * dim), ("wo", L * dim * dim),
        ("rms_ffn", L * dim), ("w1", L * hidden * dim), ("w2", L * dim * hidden),
        ("w3", L * hidden * dim), ("rms_final", dim),
        ("freq_cis_real", seq_len * hd // 2), ("freq_cis_imag", seq_len * hd // 2),
    ]
    if not shared:
        legacy_order.append(("wcls", vocab * dim))
    parts = {}
    pos = 0
    for name, n in legacy_order:
        parts[name] = data[pos:pos + n]
        if parts[name].size != n:
            raise ValueError(f"{src}: file too short while reading {name}")
        pos += n
    if pos != data.size:
        raise ValueError(f"{src}: {data.size - pos} unexpected trailing floats")

    header = struct.pack("<I", MAGIC) + struct.pack("<i", 1)
    header += struct.pack("<7i", dim, hidden, L, H, KV, vocab, seq_len)
    header += struct.pack("<B", 1 if shared else 0)
    header += b"\0" * (HEADER_BYTES - len(header))

    # Version-1 order. Stacked [L, ...] blocks are already "all layers of one
    # kind" in both formats, so each block is copied whole.
    v1_order = ["rms_att", "rms_ffn", "rms_final", "tok_emb",
                "wq", "wk", "wv", "wo", "w1", "w2", "w3"]
    if not shared:
        v1_order.append("wcls")
    with open(dst, "wb") as f:
        f.write(header)
        for name in v1_order:
            f.write(parts[name].astype("<f4").tobytes())


def main(argv) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    convert(argv[1], argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
