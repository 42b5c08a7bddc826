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
//! (`MODE=governor` for governor's, `MODE=ours_async` for ours through an async
//! call, `MODE=both` for ours and governor's alternating in one process, in
//! `ROUNDS` rounds of `N` calls each (10 unless set), which prints their ratios; as a `#[with_resilience]` async fn without retry makes it; `--LL` is this VM's 32 MB L3.) valgrind's
//! summary then gives the misses of the loop alone: `D1 misses` (lines read from
//! beyond the first-level cache) and `LL misses` (from memory), per call once
//! divided by `N`. Run without valgrind, it prints the time per call. With
//! `KEY_ORDER` set (to anything), the loop calls the keys in the order they were
//! registered, as the table's other computed-key row does; `KEYS` sets how many
//! keys (100,000 unless set).
//!
//! Which bytes of each object a call reads, with valgrind's `dhat` (its counts
//! wrap at 65,536 over an allocation site's blocks, hence 1,000 keys: 26 calls a
//! key, 25 before the loop and one in it):
//!
//! ```text
//! MODE=ours KEYS=1000 N=1000 valgrind --tool=dhat --dhat-out-file=dhat.json \
//!     target/release/examples/keyed_misses
//! python3 scripts/dhat-bytes.py dhat.json 1000
//! ```
//!
//! Every key is called 25 times before the loop (`keyed::warm`).

#[path = "../benches/common/mod.rs"]
mod common;
mod keyed;
use keyed::{governor_loop, ours_loop};

fn main() {
    let mode = std::env::var("MODE").unwrap_or_else(|_| "ours".into());
    let n = match keyed::count_from_env("N", 1_000_000) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("keyed_misses: {e}");
            std::process::exit(2);
        }
    };
    if !["ours", "ours_async", "governor", "both"].contains(&mode.as_str()) {
        eprintln!("MODE must be `ours`, `ours_async`, `governor` or `both`, not `{mode}`");
        std::process::exit(2);
    }
    let keys = match keyed::count_from_env("KEYS", keyed::KEYS) {
        Ok(n) => keyed::keys_of(n),
        Err(e) => {
            eprintln!("keyed_misses: {e}");
            std::process::exit(2);
        }
    };
    let mut shuffled = keys.clone();
    if std::env::var_os("KEY_ORDER").is_none() {
        common::shuffle(&mut shuffled);
    }
    if mode == "both" {
        both(&keys, &shuffled, n);
        return;
    }
    let ok = if mode != "governor" {
        if let Err(e) = keyed::warm(&keys) {
            eprintln!("keyed_misses: {e}");
            std::process::exit(1);
        }
        let t = std::time::Instant::now();
        let ok = if mode == "ours" {
            ours_loop(&shuffled, n)
        } else {
            ours_async_loop(&shuffled, n)
        };
        println!(
            "{mode}: {:.1} ns a call",
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

/// Both sides in one process, their keys registered, in rounds of `n` calls that
/// alternate which goes first: each round's ratio is taken under the same load of
/// the host, which on a shared machine moves the time of a cache miss by 2-3x
/// within minutes. Prints each round and the median ratio.
fn both(keys: &[String], shuffled: &[String], n: usize) {
    let rounds = match keyed::count_from_env("ROUNDS", 10) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keyed_misses: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = keyed::warm(keys) {
        eprintln!("keyed_misses: {e}");
        std::process::exit(1);
    }
    let gov = common::governor_keyed(keys);
    let time = |f: &dyn Fn() -> usize| {
        let t = std::time::Instant::now();
        assert_eq!(f(), n, "every call succeeds");
        t.elapsed().as_nanos() as f64 / n as f64
    };
    let mut ratios = Vec::new();
    for r in 0..rounds {
        let ours = || ours_loop(shuffled, n);
        let governor = || governor_loop(&gov, shuffled, n);
        let (o, g) = if r % 2 == 0 {
            let o = time(&ours);
            (o, time(&governor))
        } else {
            let g = time(&governor);
            (time(&ours), g)
        };
        println!(
            "round {r}: ours {o:.1} ns, governor {g:.1} ns, ratio {:.3}",
            o / g
        );
        ratios.push(o / g);
    }
    ratios.sort_by(f64::total_cmp);
    println!("median ratio {:.3}", ratios[ratios.len() / 2]);
}

/// The async shape of `keyed::call_keyed`, as a `#[with_resilience]` async fn with a
/// computed service name and no retry expands to (`once_lean`), polled once.
#[inline(never)]
fn call_keyed_async(key: &str) -> Result<u32, common::BenchError> {
    let svc = keyed::SITE.keyed(key);
    common::poll_once(svc.once_lean(&keyed::HOOKS, || async { common::ok_sync() }))
}

/// `n` calls of ours through [`call_keyed_async`], going round `keys`; how many
/// succeeded.
#[inline(never)]
fn ours_async_loop(keys: &[String], n: usize) -> usize {
    keyed::calls_loop(keys, n, call_keyed_async)
}
