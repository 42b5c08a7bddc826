//! How far a smaller registry entry, or a registry of our own, could take the
//! shuffled computed-key row: models of the runtime's entry, of an entry of one
//! cache line, and of an index over an array of one-line slots, against
//! governor's keyed `check_key`, over 100,000 keys called in a shuffled order.
//!
//! - `today`: the runtime's entry. The map's key (the name, inline, 24 bytes) and
//!   value (96 bytes: the 40 bytes a lane call reads, the hold, the policies word,
//!   the count of successes and the breaker's two words, then the 56 it does not
//!   read); the name's `Arc<str>` allocated on the heap before it, as the runtime's
//!   service does.
//! - `line`: the key and those 40 bytes alone, 64 bytes aligned to 64 (the map's
//!   key, its value none), so a call reads one line of its entry; the other 56 bytes
//!   and the name allocated before it on the heap. The runtime cannot have it as it
//!   is: it has no word left for a pointer to the rest of the service.
//! - `slab`: no papaya map. The same 64 bytes a key (the name and the 40 bytes)
//!   side by side in one array, aligned to 64, and an index of 8-byte words (a tag
//!   of the key's hash and the slot's number, probed linearly), a power of two of
//!   them filled to at most 7/8; a lookup pins a collector as papaya's does. A
//!   registry of its own, which the runtime does not have: the index is not
//!   concurrent here (it reads the memory a concurrent one would), and the rest
//!   of a key's service would lie in a second array at the same number.
//! - `governor`: governor's keyed `check_key`, its map made first and sized.
//!
//! Each call does what a lane call does to its entry: the lookup, an add on the
//! hold, the three words tested, an add on the count, the hold given back.
//!
//! ```text
//! cargo build --release -p resilience-benches --example keyed_one_line
//! target/release/examples/keyed_one_line
//! ```
//!
//! runs the four in turn in one process, `ROUNDS` rounds (10 unless set) of `N`
//! calls each (400,000), and prints each round's times and the median ratios. With
//! `MODE` set to `today`, `line`, `slab` or `governor` only that one is made and run, once,
//! for valgrind's cache model at a last-level cache of a given size:
//!
//! ```text
//! MODE=line N=300000 valgrind --tool=callgrind --cache-sim=yes \
//!     --D1=32768,8,64 --LL=16777216,16,64 --toggle-collect='keyed_one_line::*_loop' \
//!     target/release/examples/keyed_one_line
//! ```

use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Arc;

use compact_str::CompactString;

#[path = "../benches/common/mod.rs"]
mod common;
// The other computed-key examples' helpers; this one uses its counts and keys.
#[allow(dead_code)]
mod keyed;
use keyed::{count_from_env, keys_of, KEYS};

type Hasher = foldhash::fast::FixedState;

/// What a lane call reads and writes of its entry, after the key.
#[repr(C)]
struct Hot {
    hold: AtomicUsize,
    policies: AtomicIsize,
    count: AtomicU64,
    state: AtomicU64,
    window: AtomicU64,
}

impl Hot {
    fn new() -> Self {
        Hot {
            hold: AtomicUsize::new(0),
            policies: AtomicIsize::new(0),
            count: AtomicU64::new(0),
            state: AtomicU64::new(0),
            window: AtomicU64::new(0),
        }
    }

    #[inline(always)]
    fn call(&self) -> bool {
        self.hold.fetch_add(1, Relaxed);
        let closed = self.policies.load(Relaxed) == 0
            && self.state.load(Relaxed) == 0
            && self.window.load(Relaxed) == 0;
        if closed {
            self.count.fetch_add(1, Relaxed);
        }
        self.hold.fetch_sub(1, Release);
        closed
    }
}

/// `today`'s value: 96 bytes, so 120 with its key.
#[repr(C)]
struct Today {
    hot: Hot,
    _rest: [u64; 5],
    _name: Arc<str>,
}

/// `line`'s key: one line.
#[repr(C, align(64))]
struct Line {
    key: CompactString,
    hot: Hot,
}

const _: () = assert!(std::mem::size_of::<Line>() == 64);
const _: () = assert!(std::mem::size_of::<CompactString>() + std::mem::size_of::<Today>() == 120);

impl std::borrow::Borrow<str> for Line {
    fn borrow(&self) -> &str {
        &self.key
    }
}

impl std::hash::Hash for Line {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.as_str().hash(state);
    }
}

impl PartialEq for Line {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Line {}

/// `slab`'s slot: the runtime's entry, 64-byte aligned, in one array.
#[repr(C, align(64))]
struct SlabSlot {
    key: CompactString,
    hot: Hot,
}

const _: () = assert!(std::mem::size_of::<SlabSlot>() == 64);

/// `slab`: an index of words (a tag of the hash and a slot's number) over an array
/// of slots. Not concurrent: it reads the memory a concurrent one would.
struct Slab {
    index: Vec<AtomicU64>,
    slots: Vec<SlabSlot>,
    hasher: Hasher,
    /// A concurrent index needs its readers pinned (a table or a slot is reused
    /// only once no reader can see it); each lookup pins this empty map's
    /// collector, as a papaya lookup pins its own.
    pin: papaya::HashMap<u8, u8>,
}

impl Slab {
    fn new(keys: &[String]) -> Self {
        let cap = (keys.len() * 8 / 7).next_power_of_two();
        let mut slab = Slab {
            index: (0..cap).map(|_| AtomicU64::new(0)).collect(),
            slots: Vec::with_capacity(keys.len()),
            hasher: Hasher::default(),
            pin: papaya::HashMap::new(),
        };
        for k in keys {
            let n = slab.slots.len() as u64;
            slab.slots.push(SlabSlot {
                key: k.as_str().into(),
                hot: Hot::new(),
            });
            let h = std::hash::BuildHasher::hash_one(&slab.hasher, k.as_str());
            let mut i = h as usize & (cap - 1);
            while slab.index[i].load(Relaxed) != 0 {
                i = (i + 1) & (cap - 1);
            }
            slab.index[i].store(Self::tag(h) << 32 | n, Relaxed);
        }
        slab
    }

    fn tag(h: u64) -> u64 {
        (h >> 57) | 0x80
    }

    #[inline(always)]
    fn get(&self, key: &str) -> Option<&SlabSlot> {
        let _pinned = self.pin.guard();
        let h = std::hash::BuildHasher::hash_one(&self.hasher, key);
        let mask = self.index.len() - 1;
        let mut i = h as usize & mask;
        loop {
            let w = self.index[i].load(Acquire);
            if w == 0 {
                return None;
            }
            if w >> 32 == Self::tag(h) {
                let slot = &self.slots[(w & 0xffff_ffff) as usize];
                if slot.key == key {
                    return Some(slot);
                }
            }
            i = (i + 1) & mask;
        }
    }
}

type TodayMap = papaya::HashMap<CompactString, Today, Hasher>;
type LineMap = papaya::HashMap<Line, (), Hasher>;
type Governor = governor::DefaultKeyedRateLimiter<String>;
/// What a `line` key keeps apart: its name and the other 56 bytes.
type Apart = (Arc<str>, Box<[u64; 7]>);

fn today(keys: &[String]) -> TodayMap {
    let map = TodayMap::with_hasher(Hasher::default());
    for k in keys {
        let name: Arc<str> = k.as_str().into();
        let value = Today {
            hot: Hot::new(),
            _rest: [0; 5],
            _name: name,
        };
        map.pin().insert(k.as_str().into(), value);
    }
    map
}

/// The map, and what each key keeps apart (its name and the other 56 bytes).
fn line(keys: &[String]) -> (LineMap, Vec<Apart>) {
    let map = LineMap::with_hasher(Hasher::default());
    let mut apart = Vec::with_capacity(keys.len());
    for k in keys {
        apart.push((k.as_str().into(), Box::new([0; 7])));
        let slot = Line {
            key: k.as_str().into(),
            hot: Hot::new(),
        };
        if map.pin().try_insert(slot, ()).is_err() {
            unreachable!("the keys are distinct");
        }
    }
    (map, apart)
}

/// The next key, going round.
#[inline(always)]
fn next<'k>(keys: &'k [String], i: &mut usize) -> &'k String {
    *i = if *i + 1 == keys.len() { 0 } else { *i + 1 };
    &keys[*i]
}

#[inline(never)]
fn today_loop(map: &TodayMap, keys: &[String], i: &mut usize, n: usize) -> usize {
    (0..n)
        .filter(|_| {
            map.pin()
                .get(next(keys, i).as_str())
                .is_some_and(|v| v.hot.call())
        })
        .count()
}

#[inline(never)]
fn line_loop(map: &LineMap, keys: &[String], i: &mut usize, n: usize) -> usize {
    (0..n)
        .filter(|_| {
            map.pin()
                .get_key_value(next(keys, i).as_str())
                .is_some_and(|(slot, ())| slot.hot.call())
        })
        .count()
}

#[inline(never)]
fn slab_loop(slab: &Slab, keys: &[String], i: &mut usize, n: usize) -> usize {
    (0..n)
        .filter(|_| slab.get(next(keys, i)).is_some_and(|slot| slot.hot.call()))
        .count()
}

#[inline(never)]
fn governor_loop(gov: &Governor, keys: &[String], i: &mut usize, n: usize) -> usize {
    (0..n)
        .filter(|_| gov.check_key(next(keys, i)).is_ok())
        .count()
}

/// The count in the environment variable `name`, or `default`; a bad one ends the
/// example with its message.
fn count(name: &str, default: usize) -> usize {
    count_from_env(name, default).unwrap_or_else(|e| {
        eprintln!("keyed_one_line: {e}");
        std::process::exit(2);
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mode = std::env::var("MODE").unwrap_or_default();
    if !["", "today", "line", "slab", "governor"].contains(&mode.as_str()) {
        eprintln!("MODE must be unset, `today`, `line`, `slab` or `governor`, not `{mode}`");
        std::process::exit(2);
    }
    let all = mode.is_empty();
    let n = count("N", 400_000);
    let rounds = if all { count("ROUNDS", 10) } else { 1 };
    let keys = keys_of(KEYS);
    let mut shuffled = keys.clone();
    common::shuffle(&mut shuffled);

    // Governor's map first, as in the bench (`compare.rs`, the 100,000-key group).
    let gov = (all || mode == "governor").then(|| common::governor_keyed(&keys));
    let today = (all || mode == "today").then(|| today(&keys));
    let line = (all || mode == "line").then(|| line(&keys));
    let slab = (all || mode == "slab").then(|| Slab::new(&keys));

    let mut i = 0;
    let (mut line_today, mut today_gov, mut slab_gov) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut ns = [f64::NAN; 4];
        // Each round starts with the next side, so none always follows the same one.
        for side in (0..4).map(|s| (s + round) % 4) {
            let t = std::time::Instant::now();
            let ok = match side {
                0 => today.as_ref().map(|m| today_loop(m, &shuffled, &mut i, n)),
                1 => line
                    .as_ref()
                    .map(|(m, _)| line_loop(m, &shuffled, &mut i, n)),
                2 => slab.as_ref().map(|s| slab_loop(s, &shuffled, &mut i, n)),
                _ => gov.as_ref().map(|g| governor_loop(g, &shuffled, &mut i, n)),
            };
            if let Some(ok) = ok {
                assert_eq!(ok, n, "every call succeeds");
                ns[side] = t.elapsed().as_nanos() as f64 / n as f64;
            }
        }
        let [t, l, sl, g] = ns;
        println!("today {t:6.1} ns   line {l:6.1} ns   slab {sl:6.1} ns   governor {g:6.1} ns");
        line_today.push(l / t);
        today_gov.push(t / g);
        slab_gov.push(sl / g);
    }
    if all {
        println!(
            "median line / today {:.2}, today / governor {:.2}, slab / governor {:.2}",
            median(line_today),
            median(today_gov),
            median(slab_gov)
        );
    }
}
