"""A deliberately naive re-statement of llama2.c run.c's encode() (the O(n^2) rescan), to check the
heap-based tokenizer on vocabularies that have no SentencePiece model (tok512.bin).

usage: encode.py TOKENIZER.bin VOCAB_SIZE IN.json OUT.json (lists of strings -> lists of ids, BOS first)."""
import json
import struct
import sys

path, vocab_size = sys.argv[1], int(sys.argv[2])
pieces, scores = [], []
with open(path, "rb") as f:
    f.read(4)
    for _ in range(vocab_size):
        score, n = struct.unpack("<fi", f.read(8))
        scores.append(score)
        pieces.append(f.read(n).decode("utf-8"))
lookup = {}
for i, p in enumerate(pieces):
    lookup.setdefault(p, i)


def encode(text):
    ids = [1]
    if text:
        ids.append(lookup[" "])
    for ch in text:
        if ch in lookup:
            ids.append(lookup[ch])
        else:
            ids.extend(b + 3 for b in ch.encode("utf-8"))
    while True:
        best, best_i, best_id = -1e10, -1, -1
        for i in range(1, len(ids) - 1):  # never merge across BOS
            cand = pieces[ids[i]] + pieces[ids[i + 1]]
            j = lookup.get(cand)
            if j is not None and scores[j] > best:
                best, best_i, best_id = scores[j], i, j
        if best_i < 0:
            return ids
        ids[best_i:best_i + 2] = [best_id]


with open(sys.argv[3], encoding="utf-8") as f:
    texts = json.load(f)
with open(sys.argv[4], "w", encoding="utf-8") as f:
    json.dump([encode(t) for t in texts], f)
