#!/usr/bin/env python3
"""Splits a .NET process's resident memory by what holds it, from two /proc/PID/smaps snapshots.

Usage: python3 bench/fuzz/smaps_split.py BEFORE.smaps AFTER.smaps   (cat /proc/PID/smaps > FILE)

Classes: the GC's regions (the run of anonymous mappings around the GC's largest PROT_NONE
reservation), glibc malloc arenas (anonymous mappings at a 64 MiB boundary followed by their PROT_NONE
rest up to the next one), the brk heap (malloc's main arena), thread stacks (after a 4 KiB guard page),
the JIT's double-mapped code (memfd:doublemapper, shared), file mappings, and the rest. This is how
bench/RESULTS.md's "what the memory was" was measured.
"""
import collections
import re
import sys

ARENA = 64 << 20


def parse(path):
    rows, cur = [], None
    for line in open(path):
        m = re.match(r'^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\d+)\s*(.*)$', line)
        if m:
            cur = {'s': int(m.group(1), 16), 'e': int(m.group(2), 16), 'p': m.group(3),
                   'ino': int(m.group(4)), 'n': m.group(5).strip(), 'rss': 0}
            rows.append(cur)
        elif line.startswith('Rss:'):
            cur['rss'] = int(line.split()[1])
    return rows


def classify(rows):
    def anon(r):
        return r['ino'] == 0 and not r['n']
    big = max((i for i, r in enumerate(rows) if anon(r) and r['p'].startswith('---')),
              key=lambda i: rows[i]['e'] - rows[i]['s'])
    lo = hi = big
    while lo > 0 and anon(rows[lo - 1]) and rows[lo - 1]['e'] == rows[lo]['s']:
        lo -= 1
    while hi < len(rows) - 1 and anon(rows[hi + 1]) and rows[hi + 1]['s'] == rows[hi]['e']:
        hi += 1
    for i, r in enumerate(rows):
        nxt = rows[i + 1] if i + 1 < len(rows) else None
        prev = rows[i - 1] if i > 0 else None
        if 'doublemapper' in r['n']:
            c = 'JIT code (doublemapper, shared)'
        elif r['n'] == '[heap]':
            c = 'brk heap (malloc main arena)'
        elif not anon(r):
            c = r['n'] if r['n'].startswith('[') else 'file and other named mappings'
        elif r['s'] % ARENA == 0 and (r['e'] - r['s'] == ARENA or (
                nxt and anon(nxt) and nxt['p'].startswith('---') and nxt['s'] == r['e'] and nxt['e'] == r['s'] + ARENA)):
            c = 'malloc arenas'
        elif lo <= i <= hi:
            c = 'GC regions'
        elif prev and prev['p'].startswith('---') and prev['e'] - prev['s'] == 4096 and prev['e'] == r['s']:
            c = 'thread stacks'
        else:
            c = 'other anonymous'
        yield c, r


def split(path):
    kib, count = collections.Counter(), collections.Counter()
    for c, r in classify(parse(path)):
        kib[c] += r['rss']
        count[c] += 1
    return kib, count


if __name__ == '__main__':
    a, na = split(sys.argv[1])
    b, nb = split(sys.argv[2])
    print(f"RSS MiB {sum(a.values()) / 1024:.1f} -> {sum(b.values()) / 1024:.1f}")
    for c in sorted(set(a) | set(b), key=lambda c: -(b[c] - a[c])):
        print(f"  {c:34} {a[c] / 1024:7.1f} -> {b[c] / 1024:7.1f}  ({(b[c] - a[c]) / 1024:+6.1f})  mappings {na[c]} -> {nb[c]}")
