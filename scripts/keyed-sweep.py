#!/usr/bin/env python3
"""Where the computed-key row falls off: the shuffled keyed loop at several key counts,
ours against governor's keyed `check_key`, alternated, medians per count.

    cargo build --release -p resilience-benches --example keyed_misses
    python3 scripts/keyed-sweep.py [--rounds 3] [--calls 3000000] [--keys 10000,30000,100000]

A layout whose per-key lines fit the cache keeps its time flat as the keys grow; one
that does not climbs once they stop fitting. The ratio at 100,000 keys is the table's
shuffled computed-key row (target <= 1.0).
"""

import argparse
import os
import re
import statistics
import subprocess
import sys

DEFAULT_KEYS = "10000,20000,30000,50000,70000,100000"
BIN = os.path.join("target", "release", "examples", "keyed_misses")


def one(binary, mode, keys, calls):
    env = dict(os.environ, MODE=mode, KEYS=str(keys), N=str(calls))
    env.pop("KEY_ORDER", None)
    out = subprocess.run([binary], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{binary} MODE={mode} KEYS={keys} failed:\n{out.stderr}")
    m = re.search(r"([\d.]+) ns a call", out.stdout)
    if not m:
        sys.exit(f"no time in the output of MODE={mode} KEYS={keys}: {out.stdout!r}")
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=3_000_000)
    ap.add_argument("--keys", default=DEFAULT_KEYS, help="comma-separated key counts")
    ap.add_argument("--bin", default=BIN)
    a = ap.parse_args()
    try:
        counts = [int(k) for k in a.keys.split(",") if k.strip()]
    except ValueError:
        sys.exit(f"--keys must be comma-separated whole numbers, not {a.keys!r}")
    if not counts or min(counts) < 1 or a.rounds < 1 or a.calls < 1:
        sys.exit("--keys, --rounds and --calls must be at least 1")
    if not os.path.exists(a.bin):
        sys.exit(f"{a.bin} is missing: cargo build --release -p resilience-benches --example keyed_misses")
    times = {}
    for _ in range(a.rounds):
        for k in counts:
            for mode in ("ours", "governor"):
                times.setdefault((k, mode), []).append(one(a.bin, mode, k, a.calls))
    print("| keys | ours (ns) | governor (ns) | ratio of medians |")
    print("| ---: | --- | --- | ---: |")
    for k in counts:
        o, g = times[(k, "ours")], times[(k, "governor")]
        mo, mg = statistics.median(o), statistics.median(g)
        print(
            f"| {k:,} | {mo:.1f} ({min(o):.1f}-{max(o):.1f}) "
            f"| {mg:.1f} ({min(g):.1f}-{max(g):.1f}) | {mo / mg:.2f} |"
        )


if __name__ == "__main__":
    main()
