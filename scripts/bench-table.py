#!/usr/bin/env python3
"""Markdown table of the benchmarks (benches/benches/compare.rs, and tokio_clock.rs
for the rows marked "tokio's clock, chosen") against their targets.

Reads `target/criterion/<group>/<function>/new/estimates.json` (the mean's point
estimate, in ns) for every row below and prints:

    item | ours (ns) | peer | peer (ns) | ratio | target | met?

`ratio` is ours / peer (lower is better) for the "<=" targets; for the throughput
targets (">=") it is peer time / ours time, i.e. how many times more calls ours
completes per unit of time. A row whose estimates are missing shows "-".

Usage: python3 scripts/bench-table.py [--criterion-dir DIR]
       (DIR defaults to $CARGO_TARGET_DIR/criterion or <workspace>/target/criterion)
Exits 0 whatever the outcome; `--strict` exits 1 when a measured target is missed.
"""

import argparse
import json
import os
import sys
from pathlib import Path

# (item, ours "<group>/<fn>", peer label, peer "<group>/<fn>", op, target)
#   op "<=": ours_ns / peer_ns <= target
#   op ">=": peer_ns / ours_ns >= target (throughput: ours completes target x as many)
ROWS = [
    ("floor: plain sync call", "plain_call/sync", "-", None, None, None),
    ("floor: ready future, one poll", "plain_call/async", "-", None, None, None),
    ("floor: one atomic read-modify-write", "plain_call/atomic_fetch_add", "-", None, None, None),
    ("floor: two atomic read-modify-writes (a slot taken and given back)",
     "plain_call/atomic_take_and_give_back", "-", None, None, None),
    ("floor: the same, taken by a compare-and-swap under a limit (a bounded slot)",
     "plain_call/atomic_bounded_take_and_give_back", "-", None, None, None),
    ("floor: a bounded slot taken by compare-and-swap, given back by a plain store on the thread's line",
     "plain_call/atomic_bounded_take_plain_give_back", "-", None, None, None),
    ("floor: tokio's clock read (Instant::now)", "plain_call/tokio_instant_now", "-", None, None, None),
    ("floor: the CPU's counter read (rdtsc)", "plain_call/cpu_counter", "-", None, None, None),
    ("floor: an exact permit's least (the CPU's counter read, then one compare-and-swap of a GCRA state)",
     "plain_call/cpu_counter_permit", "-", None, None, None),
    ("floor: a computed key's memory reads alone, keys shuffled (the key hashed, a 4-byte index word, the entry's line, one atomic add)",
     "keyed_100k/floor_shuffled", "-", None, None, None),
    ("closed breaker, sync (consecutive)", "closed_breaker_sync/resilience_consecutive",
     "recloser", "closed_breaker_sync/recloser", "<=", 0.25),
    ("closed breaker, sync (consecutive)", "closed_breaker_sync/resilience_consecutive",
     "failsafe consecutive", "closed_breaker_sync/failsafe_consecutive", "<=", 0.25),
    ("closed breaker, sync (rate mode)", "closed_breaker_sync/resilience_rate",
     "recloser", "closed_breaker_sync/recloser", "<=", 0.25),
    ("closed breaker, sync (rate mode)", "closed_breaker_sync/resilience_rate",
     "failsafe default", "closed_breaker_sync/failsafe_default", "<=", 0.25),
    ("closed breaker, sync (attribute protocol by hand, consecutive)", "closed_breaker_sync/resilience_site",
     "recloser", "closed_breaker_sync/recloser", "<=", 0.25),
    ("closed breaker, sync (attribute protocol by hand, consecutive)", "closed_breaker_sync/resilience_site",
     "failsafe consecutive", "closed_breaker_sync/failsafe_consecutive", "<=", 0.25),
    ("closed breaker, sync (#[circuit_breaker] fn, consecutive)", "closed_breaker_sync/resilience_macro",
     "recloser", "closed_breaker_sync/recloser", "<=", 0.25),
    ("closed breaker, sync (#[circuit_breaker] fn, consecutive)", "closed_breaker_sync/resilience_macro",
     "failsafe consecutive", "closed_breaker_sync/failsafe_consecutive", "<=", 0.25),
    ("closed breaker, async (consecutive)", "closed_breaker_async/resilience_consecutive",
     "recloser async", "closed_breaker_async/recloser", "<=", 0.25),
    ("closed breaker, async (consecutive)", "closed_breaker_async/resilience_consecutive",
     "failsafe futures consecutive", "closed_breaker_async/failsafe_consecutive", "<=", 0.25),
    ("closed breaker, async (rate mode)", "closed_breaker_async/resilience_rate",
     "failsafe futures default", "closed_breaker_async/failsafe_default", "<=", 0.25),
    ("closed breaker, async (attribute protocol by hand, consecutive)", "closed_breaker_async/resilience_site",
     "recloser async", "closed_breaker_async/recloser", "<=", 0.25),
    ("closed breaker, async (#[circuit_breaker] async fn, consecutive)", "closed_breaker_async/resilience_macro",
     "recloser async", "closed_breaker_async/recloser", "<=", 0.25),
    ("closed breaker, async (#[circuit_breaker] async fn, a &mut argument, consecutive)",
     "closed_breaker_async/resilience_macro_lending",
     "recloser async", "closed_breaker_async/recloser", "<=", 0.25),
    ("closed breaker + retry, async, a &mut argument lent to each attempt (protocol by hand; no target)",
     "closed_breaker_async/resilience_site_retry_lending",
     "recloser async", "closed_breaker_async/recloser", "<=", None),
    ("open rejection (force_open)", "open_rejection/resilience",
     "recloser open", "open_rejection/recloser", "<=", 0.5),
    ("open rejection (tripped, cooldown; the default clock, the CPU's here)", "open_rejection/resilience_tripped",
     "recloser open", "open_rejection/recloser", "<=", 0.5),
    ("open rejection (tripped, cooldown; tokio's clock, chosen; no target)",
     "open_rejection_tokio_clock/resilience_tripped",
     "recloser open", "open_rejection_tokio_clock/recloser", "<=", None),
    ("timeout, body ready at first poll", "timeout/resilience",
     "tokio::time::timeout", "timeout/tokio", "<=", 0.2),
    ("retry, success first attempt, sync", "retry_sync/resilience",
     "backon sync", "retry_sync/backon", "<=", 1.0),
    ("retry, success first attempt, sync (#[with_retry] fn)", "retry_sync/resilience_macro",
     "backon sync", "retry_sync/backon", "<=", 1.0),
    ("retry, success first attempt, async", "retry_async/resilience",
     "backon async", "retry_async/backon", "<=", 1.0),
    ("retry, success first attempt, async (#[with_retry] async fn)", "retry_async/resilience_macro",
     "backon async", "retry_async/backon", "<=", 1.0),
    ("retry, success first attempt, async (#[with_retry] async fn, a &mut argument lent to each attempt)",
     "retry_async/resilience_macro_lending",
     "backon async", "retry_async/backon", "<=", 1.0),
    ("bulkhead acquire + release (async)", "bulkhead/resilience",
     "tower ConcurrencyLimit", "bulkhead/tower_concurrency_limit", "<=", 0.3),
    ("bulkhead acquire + release (sync)", "bulkhead/resilience_sync",
     "tower ConcurrencyLimit", "bulkhead/tower_concurrency_limit", "<=", 0.3),
    ("bulkhead acquire + release (async, #[bulkhead] async fn)", "bulkhead/resilience_macro",
     "tower ConcurrencyLimit", "bulkhead/tower_concurrency_limit", "<=", 0.3),
    ("bulkhead acquire + release (sync, #[bulkhead] fn)", "bulkhead/resilience_macro_sync",
     "tower ConcurrencyLimit", "bulkhead/tower_concurrency_limit", "<=", 0.3),
    ("rate limiter permit (the default clock, the CPU's here)", "rate_limiter/resilience",
     "governor check", "rate_limiter/governor", "<=", 1.0),
    ("rate limiter permit (tokio's clock, chosen; no target)", "rate_limiter_tokio_clock/resilience",
     "governor check", "rate_limiter_tokio_clock/governor", "<=", None),
    ("computed name, 100k keys + closed breaker", "keyed_100k/resilience",
     "governor keyed check_key", "keyed_100k/governor", "<=", 1.0),
    ("computed name, 100k keys + closed breaker (keys in shuffled order)",
     "keyed_100k/resilience_shuffled",
     "governor keyed check_key (same order)", "keyed_100k/governor_shuffled", "<=", 1.0),
    ("computed name, 100k keys + closed breaker, async fn (shuffled)",
     "keyed_100k/resilience_async_shuffled",
     "governor keyed check_key (same order)", "keyed_100k/governor_shuffled", "<=", 1.0),
    ("2 threads, shared breaker (ns/call, throughput)", "two_threads/resilience_2t",
     "ours 1 thread", "two_threads/resilience_1t", ">=", 1.5),
    ("2 threads, shared breaker (ns/call, throughput)", "two_threads/resilience_2t",
     "recloser 2 threads", "two_threads/recloser_2t", ">=", 4.0),
    ("2 threads, shared rate-mode breaker", "two_threads/resilience_rate_2t",
     "recloser 2 threads", "two_threads/recloser_2t", ">=", 4.0),
    ("closed breaker, sync, rate mode, 1 call in 20 failing (no target)", "breaker_with_failures/resilience",
     "recloser (same settings)", "breaker_with_failures/recloser", "<=", None),
    ("2 threads, the same, shared breaker (ns/call, throughput; no target)", "breaker_with_failures/resilience_2t",
     "recloser 2 threads", "breaker_with_failures/recloser_2t", ">=", None),
    ("stack: breaker+retry+timeout+bulkhead", "stack/resilience",
     "tower timeout+retry+concurrency_limit", "stack/tower", "<=", 0.35),
    ("stack: attribute protocol by hand (async fn)", "stack/resilience_site",
     "tower timeout+retry+concurrency_limit", "stack/tower", "<=", 0.35),
    ("stack: #[with_resilience] async fn", "stack/macro",
     "tower timeout+retry+concurrency_limit", "stack/tower", "<=", 0.35),
]


def default_dir() -> Path:
    env = os.environ.get("CARGO_TARGET_DIR")
    if env:
        return Path(env) / "criterion"
    return Path(__file__).resolve().parent.parent / "target" / "criterion"


def mean_ns(root: Path, bench: str):
    """The mean's point estimate of `<group>/<fn>`, or None when not measured."""
    if bench is None:
        return None
    group, _, func = bench.partition("/")
    path = root / group / func / "new" / "estimates.json"
    try:
        with open(path) as f:
            return float(json.load(f)["mean"]["point_estimate"])
    except (OSError, KeyError, ValueError):
        return None


def fmt_ns(v):
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--criterion-dir", type=Path, default=default_dir())
    ap.add_argument("--strict", action="store_true", help="exit 1 when a measured target is missed")
    args = ap.parse_args()
    root = args.criterion_dir
    if not root.is_dir():
        print(f"no criterion results in {root}: run `cargo bench -p resilience-benches` first", file=sys.stderr)
        return 2

    print("| item | ours (ns) | peer | peer (ns) | ratio | target | met? |")
    print("| --- | ---: | --- | ---: | ---: | --- | --- |")
    missed = 0
    for item, ours_b, peer_label, peer_b, op, target in ROWS:
        ours = mean_ns(root, ours_b)
        peer = mean_ns(root, peer_b)
        ratio = met = "-"
        target_s = "-"
        r = None
        # `<=` rows compare our time with the peer's; `>=` rows our throughput
        # (peer time / ours). A row with an operator and no target shows the ratio only.
        if op == "<=":
            if ours is not None and peer is not None and peer > 0:
                r = ours / peer
                ratio = f"{r:.3f}x"
            if target is not None:
                target_s = f"<= {target:g}x"
        elif op == ">=":
            if ours is not None and peer is not None and ours > 0:
                r = peer / ours
                ratio = f"{r:.2f}x"
            if target is not None:
                target_s = f">= {target:g}x throughput"
        if target is not None and r is not None:
            ok = r <= target if op == "<=" else r >= target
            met = "yes" if ok else "**no**"
            missed += not ok
        print(f"| {item} | {fmt_ns(ours)} | {peer_label} | {fmt_ns(peer)} | {ratio} | {target_s} | {met} |")
    print()
    print(f"ratio: ours / peer time for `<=` rows; peer / ours time (throughput multiple) for `>=` rows. "
          f"Missed targets: {missed}.")
    return 1 if (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
