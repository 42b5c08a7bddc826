//! The rate limiters' rows against the least an exact permit can be, in one
//! process: our rate-limited call (the bench's row), governor's `check()`, the
//! floor (`common::permit`: the CPU's counter read and one compare-and-swap of
//! a GCRA state) and the counter read alone. In rounds, the order turning each
//! round, so that each round's figures are taken under the same load of the host.
//!
//! ```text
//! cargo run --release -p resilience-benches --example rate_floor
//! ```
//!
//! `N` sets the calls a round (3,000,000), `ROUNDS` the rounds (9). x86_64 only.

#[path = "../benches/common/mod.rs"]
mod common;

use std::time::Instant;

#[inline(never)]
fn ours_loop(p: &resilience_runtime::Policy, n: usize) -> usize {
    (0..n)
        .filter(|_| p.call_sync(common::ok_sync).is_ok())
        .count()
}

#[inline(never)]
fn governor_loop(g: &governor::DefaultDirectRateLimiter, n: usize) -> usize {
    (0..n).filter(|_| g.check().is_ok()).count()
}

#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn floor_loop(n: usize) -> usize {
    (0..n).filter(|_| common::permit::permit()).count()
}

#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn counter_loop(n: usize) -> usize {
    // SAFETY: `rdtsc` is part of x86_64.
    (0..n)
        .filter(|_| unsafe { std::arch::x86_64::_rdtsc() } & 1 == 0)
        .count()
}

#[cfg(target_arch = "x86_64")]
fn main() -> Result<(), String> {
    let n = common::count_from_env("N", 3_000_000)?;
    let rounds = common::count_from_env("ROUNDS", 9)?;
    let clock = common::settled_default_clock();
    let ours = common::rate_limited("example.rate_floor");
    let gov = common::governor_direct();
    let names = ["ours", "governor", "floor (counter + CAS)", "counter alone"];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut ratios = Vec::new();
    for r in 0..rounds {
        let mut round = [0.0; 4];
        for j in 0..names.len() {
            let k = (j + r) % names.len();
            let t = Instant::now();
            let done = match k {
                0 => ours_loop(&ours, n),
                1 => governor_loop(&gov, n),
                2 => floor_loop(n),
                _ => counter_loop(n),
            };
            std::hint::black_box(done);
            round[k] = t.elapsed().as_nanos() as f64 / n as f64;
            times[k].push(round[k]);
        }
        ratios.push(round[0] / round[1]);
    }
    println!("clock: {clock:?}");
    common::print_medians(&names, times);
    ratios.sort_by(f64::total_cmp);
    println!(
        "ours / governor, round by round: median {:.3} [{:.3}-{:.3}]",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    Ok(())
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("rate_floor reads the x86_64 time-stamp counter");
}
