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

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::time::Instant;

use compact_str::CompactString;

#[path = "../benches/common/mod.rs"]
mod common;
#[allow(dead_code)]
mod keyed;
use keyed::{count_from_env, keys_of, KEYS};

const SLOT: u32 = (1 << 26) - 1;

fn tag(h: u64) -> u32 {
    ((h >> 58) as u32) << 26
}

/// A floor's entry: the key inline, three words a call adds to.
#[repr(C, align(64))]
struct Line {
    key: CompactString,
    hold: AtomicU64,
    count: AtomicU64,
    _rest: [u64; 3],
}

struct Floor<const STRIDE: usize> {
    mask: usize,
    index: Vec<u32>,
    lines: Vec<u8>,
    hasher: foldhash::fast::FixedState,
    collector: seize::Collector,
}

impl<const STRIDE: usize> Floor<STRIDE> {
    fn new(keys: &[String]) -> Self {
        let positions = (keys.len() * 8 / 7 + 1).next_power_of_two();
        let mut lines = vec![0u8; keys.len() * STRIDE + 64];
        let base = lines.as_mut_ptr().align_offset(64);
        let mut f = Floor {
            mask: positions - 1,
            index: vec![0; positions],
            lines: Vec::new(),
            hasher: foldhash::fast::FixedState::default(),
            collector: seize::Collector::new(),
        };
        for (n, k) in keys.iter().enumerate() {
            // SAFETY: within `lines`, aligned to 64.
            unsafe {
                let p = lines.as_mut_ptr().add(base + n * STRIDE).cast::<Line>();
                p.write(Line {
                    key: CompactString::new(k),
                    hold: AtomicU64::new(0),
                    count: AtomicU64::new(0),
                    _rest: [0; 3],
                });
            }
            let h = f.hasher.hash_one(k.as_str());
            let mut at = h as usize & f.mask;
            while f.index[at] != 0 {
                at = (at + 1) & f.mask;
            }
            f.index[at] = tag(h) | (n as u32 + 1);
        }
        f.lines = lines;
        f.lines.drain(..0);
        f
    }

    #[inline(always)]
    fn line(&self, n: usize) -> &Line {
        let base = self.lines.as_ptr().align_offset(64);
        // SAFETY: written in `new`.
        unsafe { &*self.lines.as_ptr().add(base + n * STRIDE).cast::<Line>() }
    }

    /// The line of `key`: the first whose index word's tag matches and which
    /// `matches` accepts.
    #[inline(always)]
    fn find(&self, key: &str, matches: impl Fn(&Line) -> bool) -> Option<&Line> {
        let h = self.hasher.hash_one(key);
        let mut at = h as usize & self.mask;
        loop {
            let w = self.index[at];
            if w == 0 {
                return None;
            }
            if (w ^ tag(h)) >> 26 == 0 {
                let l = self.line(((w & SLOT) - 1) as usize);
                if matches(l) {
                    return Some(l);
                }
            }
            at = (at + 1) & self.mask;
        }
    }
}

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
fn floor_loop<const S: usize>(f: &Floor<S>, keys: &[String], n: usize, mode: u8) -> u64 {
    let mut i = 0;
    let mut sum = 0;
    for _ in 0..n {
        i = if i + 1 == keys.len() { 0 } else { i + 1 };
        let guard = (mode & GUARD != 0).then(|| f.collector.enter());
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
                2 => floor_loop(&f64s, &shuffled, n, 0),
                3 => floor_loop(&f64s, &shuffled, n, COMPARE),
                4 => floor_loop(&f64s, &shuffled, n, COMPARE | ADDS),
                5 => floor_loop(&f64s, &shuffled, n, COMPARE | ADDS | GUARD),
                6 => floor_loop(&f192, &shuffled, n, COMPARE | ADDS | GUARD),
                7 => floor_loop(&f64s, &shuffled, n, WORDS),
                _ => floor_loop(&f64s, &shuffled, n, WORDS | ADDS | GUARD),
            };
            std::hint::black_box(done);
            times[k].push(t.elapsed().as_nanos() as f64 / n as f64);
        }
    }
    for (name, mut t) in names.iter().zip(times) {
        t.sort_by(f64::total_cmp);
        println!(
            "{name:28} median {:6.1} ns  [{:.1}-{:.1}]",
            t[t.len() / 2],
            t[0],
            t[t.len() - 1]
        );
    }
    Ok(())
}
