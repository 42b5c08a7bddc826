//! The computed-key row of the table (`keyed_100k`, 100,000 keys called in a
//! shuffled order), ours or governor's keyed `check_key`, as a plain loop that
//! valgrind can run, to count the cache misses a call makes: what decides that row
//! is how many lines a call reads that are not in the cache.
//!
//! ```text
//! cargo build --release -p resilience-benches --example keyed_misses
//! MODE=ours N=300000 valgrind --tool=callgrind --cache-sim=yes \
//!     --D1=32768,8,64 --LL=33554432,16,64 --toggle-collect='keyed_misses::*_loop' \
//!     target/release/examples/keyed_misses
//! ```
//!
//! (`MODE=governor` for governor's; `--LL` is this VM's 32 MB L3.) valgrind's
//! summary then gives the misses of the loop alone: `D1 misses` (lines read from
//! beyond the first-level cache) and `LL misses` (from memory), per call once
//! divided by `N`. Run without valgrind, it prints the time per call.
//!
//! Every key is called 25 times before the loop, as the bench's first row does
//! before the shuffled one: a breaker's count window (20 calls in the default
//! preset) records each success until it is full, and a full window of successes
//! is the closed breaker's steady state.

use std::ops::ControlFlow;

use resilience_runtime::__private::{Hooks, Site, SiteName, Spec};

#[path = "../benches/common/mod.rs"]
mod common;
use common::{ok_sync, BenchError};

const KEYS: usize = 100_000;

static SITE: Site = Site::new(
    SiteName::Fixed("example.keyed"),
    Spec {
        breaker: true,
        ..Spec::EMPTY
    },
);
static HOOKS: Hooks<BenchError> = Hooks::DEFAULT;

/// What the bench's row calls: the lookup and a closed breaker's call.
#[inline(never)]
fn call_keyed(key: &str) -> Result<u32, BenchError> {
    let svc = SITE.keyed(key);
    let mut call = svc.call(&HOOKS);
    loop {
        if let ControlFlow::Break(r) = call.attempt_sync(ok_sync) {
            return r;
        }
    }
}

#[inline(never)]
fn ours_loop(keys: &[String], n: usize) -> usize {
    let mut i = 0;
    (0..n)
        .filter(|_| {
            i = if i + 1 == keys.len() { 0 } else { i + 1 };
            call_keyed(&keys[i]).is_ok()
        })
        .count()
}

#[inline(never)]
fn governor_loop(
    gov: &governor::DefaultKeyedRateLimiter<String>,
    keys: &[String],
    n: usize,
) -> usize {
    let mut i = 0;
    (0..n)
        .filter(|_| {
            i = if i + 1 == keys.len() { 0 } else { i + 1 };
            gov.check_key(&keys[i]).is_ok()
        })
        .count()
}

fn main() {
    let mode = std::env::var("MODE").unwrap_or_else(|_| "ours".into());
    let n: usize = match std::env::var("N").map(|s| s.parse()) {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            eprintln!("N must be a count of calls: {e}");
            std::process::exit(2);
        }
        Err(_) => 1_000_000,
    };
    if mode != "ours" && mode != "governor" {
        eprintln!("MODE must be `ours` or `governor`, not `{mode}`");
        std::process::exit(2);
    }
    let keys: Vec<String> = (0..KEYS).map(|i| format!("tenant-{i:06}")).collect();
    let mut shuffled = keys.clone();
    common::shuffle(&mut shuffled);
    let ok = if mode == "ours" {
        resilience_runtime::set_key_capacity(2 * KEYS);
        for _ in 0..25 {
            for k in &keys {
                call_keyed(k).expect("a closed breaker admits");
            }
        }
        let t = std::time::Instant::now();
        let ok = ours_loop(&shuffled, n);
        println!(
            "ours: {:.1} ns a call",
            t.elapsed().as_nanos() as f64 / n as f64
        );
        ok
    } else {
        let gov = common::governor_keyed(&keys);
        let t = std::time::Instant::now();
        let ok = governor_loop(&gov, &shuffled, n);
        println!(
            "governor: {:.1} ns a call",
            t.elapsed().as_nanos() as f64 / n as f64
        );
        ok
    };
    assert_eq!(ok, n, "every call succeeds");
}
