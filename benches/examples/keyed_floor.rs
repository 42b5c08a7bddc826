//! What a shuffled computed-key call costs above the memory reads alone: our
//! call, governor's `check_key`, and floors that make a lookup's reads (the key
//! hashed, a 4-byte index word, an entry's line; the index as large and as full
//! as ours, the entries packed lines) with more and more of what our call does
//! besides: the key compared in the entry (with `==`, or as the three words of
//! its inline form), three atomic adds on the line rather than one (ours: the
//! hold taken and given back, the count), a collector entered and left around
//! the lookup (seize's, as ours), and the same with the entries 192 bytes apart
//! (ours on main). All over the bench's 100,000 keys in its shuffled order, in
//! rounds in one process, the order turning each round.
//!
//! ```text
//! cargo run --release -p resilience-benches --example keyed_floor
//! ```
//!
//! `N` sets the calls a round (1,000,000), `ROUNDS` the rounds (6).

use std::sync::atomic::Ordering::*;
use std::time::Instant;

use compact_str::CompactString;

#[path = "../benches/common/mod.rs"]
mod common;
#[allow(dead_code)]
mod keyed;
use common::floor::Floor;
use keyed::{count_from_env, keys_of, KEYS};

/// The three words of a key's inline form (keys of the bench are inline).
#[inline(always)]
fn words(key: &CompactString) -> [u64; 3] {
    // SAFETY: a `CompactString` is 24 bytes, every bit pattern of which is a
    // valid `[u64; 3]`.
    unsafe { std::mem::transmute_copy(key) }
}

/// What a floor does besides its reads: compares the key (with `==`, or as
/// words), adds three times rather than once, enters a collector.
const COMPARE: u8 = 1;
const ADDS: u8 = 2;
const GUARD: u8 = 4;
const WORDS: u8 = 8;

#[inline(never)]
fn floor_loop<const S: usize>(
    f: &Floor<S>,
    collector: &seize::Collector,
    keys: &[String],
    n: usize,
    mode: u8,
) -> u64 {
    let mut i = 0;
    let mut sum = 0;
    for _ in 0..n {
        i = if i + 1 == keys.len() { 0 } else { i + 1 };
        let guard = (mode & GUARD != 0).then(|| collector.enter());
        let key = keys[i].as_str();
        let found = if mode & WORDS != 0 {
            let want = words(&CompactString::new(key));
            f.find(key, |l| words(&l.key) == want)
        } else if mode & COMPARE != 0 {
            f.find(key, |l| l.key.as_str() == key)
        } else {
            f.find(key, |_| true)
        };
        if let Some(l) = found {
            if mode & ADDS != 0 {
                l.hold.fetch_add(1, Relaxed);
                sum += l.count.fetch_add(1, Relaxed);
                l.hold.fetch_sub(1, Release);
            } else {
                sum += l.count.fetch_add(1, Relaxed);
            }
        }
        drop(guard);
    }
    sum
}

fn main() -> Result<(), String> {
    let n = count_from_env("N", 1_000_000)?;
    let rounds = count_from_env("ROUNDS", 6)?;
    let keys = keys_of(KEYS);
    let mut shuffled = keys.clone();
    common::shuffle(&mut shuffled);
    let gov = common::governor_keyed(&keys);
    keyed::warm(&keys)?;
    let f64s = Floor::<64>::new(&keys);
    let f192 = Floor::<192>::new(&keys);
    let c = seize::Collector::new();
    let names = [
        "ours",
        "governor",
        "floor",
        "floor+compare",
        "floor+compare+3 adds",
        "floor+compare+3 adds+guard",
        "the same, 192 apart",
        "floor+compare as words",
        "the same, 3 adds+guard",
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for r in 0..rounds {
        for j in 0..names.len() {
            let k = (j + r) % names.len();
            let t = Instant::now();
            let done = match k {
                0 => keyed::ours_loop(&shuffled, n) as u64,
                1 => keyed::governor_loop(&gov, &shuffled, n) as u64,
                2 => floor_loop(&f64s, &c, &shuffled, n, 0),
                3 => floor_loop(&f64s, &c, &shuffled, n, COMPARE),
                4 => floor_loop(&f64s, &c, &shuffled, n, COMPARE | ADDS),
                5 => floor_loop(&f64s, &c, &shuffled, n, COMPARE | ADDS | GUARD),
                6 => floor_loop(&f192, &c, &shuffled, n, COMPARE | ADDS | GUARD),
                7 => floor_loop(&f64s, &c, &shuffled, n, WORDS),
                _ => floor_loop(&f64s, &c, &shuffled, n, WORDS | ADDS | GUARD),
            };
            std::hint::black_box(done);
            times[k].push(t.elapsed().as_nanos() as f64 / n as f64);
        }
    }
    common::print_medians(&names, times);
    Ok(())
}
