"""Reads "client server metric value" lines; prints the median of each cell as a markdown table."""
import statistics
import sys
from collections import defaultdict

cells = defaultdict(list)
for line in sys.stdin:
    parts = line.split()
    if len(parts) == 4:
        cells[(parts[0], parts[1], parts[2])].append(float(parts[3]))
pairs = [("ours", "ours"), ("grpcio", "ours"), ("ours", "grpcio"), ("grpcio", "grpcio")]
metrics = ["unary_seq_calls_per_s", "unary_c16_calls_per_s", "stream_down_mib_per_s", "stream_up_mib_per_s"]
print("| client -> server | " + " | ".join(metrics) + " |")
print("|---|" + "---|" * len(metrics))
for c, s in pairs:
    row = [f"{statistics.median(cells[(c, s, m)]):.0f}" if cells[(c, s, m)] else "-" for m in metrics]
    print(f"| {c} -> {s} | " + " | ".join(row) + " |")
