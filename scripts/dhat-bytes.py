#!/usr/bin/env python3
"""Which bytes of each block an allocation site's users read or write, from a
valgrind `dhat` profile (`--tool=dhat --dhat-out-file=FILE`).

usage: dhat-bytes.py FILE BLOCKS [MIN]

For every allocation site that made exactly BLOCKS blocks of one size (the
per-key objects of a run with BLOCKS keys), prints each 8-byte word of the block
accessed MIN times a block or more (default 3), as `offset:accesses` (the most
of its 8 bytes, per block). dhat sums its per-byte counts over a site's blocks
in 16 bits, so keep BLOCKS x accesses below 65,536 (1,000 keys and about 26
calls each).
"""

import json
import sys


def counts(acc):
    """dhat's run-length access map: a negative number repeats the next one."""
    out, i = [], 0
    while i < len(acc):
        if acc[i] < 0:
            out += [acc[i + 1]] * (-acc[i])
            i += 2
        else:
            out.append(acc[i])
            i += 1
    return out


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: dhat-bytes.py FILE BLOCKS [MIN]")
    path, blocks = sys.argv[1], int(sys.argv[2])
    least = float(sys.argv[3]) if len(sys.argv) == 4 else 3.0
    with open(path) as f:
        profile = json.load(f)
    frames = profile["ftbl"]
    for pp in profile["pps"]:
        if pp["tbk"] != blocks or "acc" not in pp:
            continue
        per = [c / blocks for c in counts(pp["acc"])]
        site = [
            frames[f].split(": ", 1)[-1].split(" (in ", 1)[0]
            for f in pp["fs"]
            if "alloc::" not in frames[f] and "malloc" not in frames[f]
        ][:2]
        print(f"{len(per)}-byte blocks, made in {' <- '.join(site)}")
        words = [(at, max(per[at:at + 8])) for at in range(0, len(per), 8)]
        print("   ", " ".join(f"{at}:{n:.0f}" for at, n in words if n >= least) or "(none)")


if __name__ == "__main__":
    main()
