"""Reference ids from the sentencepiece library (Debian's python3-sentencepiece).

usage: encode.py MODEL IN.json OUT.json -- IN is a JSON list of strings, OUT gets a list of id lists
(no BOS/EOS), in one process so that a whole corpus file costs one interpreter start.
With --bench FILE REPEATS instead: prints, for FILE's whole text as one string and then for its lines
(split on "\n", one batched call), the best encode time in seconds and the ids count."""
import json
import sys
import time

import sentencepiece as spm

sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
if sys.argv[2] == "--bench":
    # errors="replace": Moby Dick holds a few cp1252 bytes, which .NET also reads as U+FFFD
    text = open(sys.argv[3], encoding="utf-8", errors="replace", newline="").read()
    for data in (text, text.split("\n")):
        best = float("inf")
        for _ in range(int(sys.argv[4])):
            t0 = time.perf_counter()
            ids = sp.encode(data)
            best = min(best, time.perf_counter() - t0)
        count = len(ids) if data is text else sum(len(x) for x in ids)
        print(f"{best:.6f} {count}")
else:
    with open(sys.argv[2], encoding="utf-8") as f:
        texts = json.load(f)
    with open(sys.argv[3], "w", encoding="utf-8") as f:
        json.dump(sp.encode(texts), f)
