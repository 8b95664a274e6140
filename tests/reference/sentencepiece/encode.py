"""Reference ids from the sentencepiece library (Debian's python3-sentencepiece).

usage: encode.py MODEL IN.json OUT.json -- IN is a JSON list of strings, OUT gets a list of id lists
(no BOS/EOS), in one process so that a whole corpus file costs one interpreter start.
With --bench FILE REPEATS instead: prints the best encode time in seconds of FILE's whole text."""
import json
import sys
import time

import sentencepiece as spm

sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
if sys.argv[2] == "--bench":
    text = open(sys.argv[3], encoding="utf-8", newline="").read()
    best = float("inf")
    for _ in range(int(sys.argv[4])):
        t0 = time.perf_counter()
        ids = sp.encode(text)
        best = min(best, time.perf_counter() - t0)
    print(f"{best:.6f} {len(ids)} {len(text.encode('utf-8'))}")
else:
    with open(sys.argv[2], encoding="utf-8") as f:
        texts = json.load(f)
    with open(sys.argv[3], "w", encoding="utf-8") as f:
        json.dump(sp.encode(texts), f)
