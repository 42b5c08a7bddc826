//! Computed keys that come back soon after the sweep evicted them.
//!
//! Past the key cap, the sweep evicts keys idle since it last passed them. When
//! more keys are in use than the cap holds, keys called in turn are evicted before
//! their next call, and every call then registers its key again: the breaker's
//! window and counts start over each time, and a registration costs far more than a
//! call. Nothing fails, so a user would not know. [`Returns`] notices it and the
//! sweep logs a warning that names the cap.
//!
//! It remembers the keys the sweep evicted in a filter of bits (one bit a key, at a
//! hash of the key), two generations of it so that old evictions age out, and
//! counts how many newly registered keys it finds there. A key never evicted may
//! find its bit set by another key's (at most about one in eight once a generation
//! is full), so the warning takes half of the new keys coming back, over a window
//! of new keys: a stream of one-off keys, however long, stays far below that. The
//! filter is allocated by the first eviction, so a process under the cap pays
//! nothing for it; it costs nothing on the call path either, only on registration
//! and in the sweep.

use std::hash::BuildHasher;
use std::sync::atomic::{
    AtomicU64, AtomicUsize,
    Ordering::{AcqRel, Acquire, Relaxed},
};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Bits in one generation of the filter (64 KB).
const BITS: u32 = 19;
const WORDS: usize = 1 << (BITS - 6);
/// Evictions a generation records before the older one is cleared and takes its
/// place: one bit in 16 set, so a key never evicted finds a bit of either
/// generation set with a chance of at most about 12%.
const GENERATION: usize = 1 << (BITS - 4);
/// New keys over which the share that came back is judged.
const WINDOW: usize = 256;
/// The least time between two warnings.
const QUIET: Duration = Duration::from_secs(60);

/// What the sweep reports: `returned` of the last `fresh` new keys were keys it
/// had evicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Thrash {
    pub(crate) returned: usize,
    pub(crate) fresh: usize,
}

pub(crate) struct Returns {
    /// Two generations of `WORDS` words, allocated by the first eviction.
    bits: OnceLock<Box<[AtomicU64]>>,
    /// Which generation records evictions (0 or 1).
    current: AtomicUsize,
    /// Evictions recorded in the current generation.
    recorded: AtomicUsize,
    /// New keys registered since the share was last judged.
    fresh: AtomicUsize,
    /// Of those, keys found in the filter.
    returned: AtomicUsize,
    /// When the last warning was given.
    warned: Mutex<Option<Instant>>,
}

/// A seed of the filter's own, so a key's bit does not follow its slot in the map.
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

fn position(key: &str) -> (usize, u64) {
    let h = foldhash::fast::FixedState::with_seed(SEED).hash_one(key);
    let bit = (h >> (64 - BITS)) as usize;
    (bit / 64, 1 << (bit % 64))
}

impl Returns {
    pub(crate) const fn new() -> Self {
        Self {
            bits: OnceLock::new(),
            current: AtomicUsize::new(0),
            recorded: AtomicUsize::new(0),
            fresh: AtomicUsize::new(0),
            returned: AtomicUsize::new(0),
            warned: Mutex::new(None),
        }
    }

    /// Records that the sweep evicted `key`. Called under the sweep's lock, which
    /// orders the generations' turns.
    pub(crate) fn evicted(&self, key: &str) {
        let bits = self
            .bits
            .get_or_init(|| (0..2 * WORDS).map(|_| AtomicU64::new(0)).collect());
        let (word, mask) = position(key);
        let mut gen = self.current.load(Relaxed);
        if self.recorded.fetch_add(1, Relaxed) + 1 > GENERATION {
            // The older generation is cleared and records from now on; the newer
            // one still answers for the keys it holds.
            gen ^= 1;
            for w in &bits[gen * WORDS..(gen + 1) * WORDS] {
                w.store(0, Relaxed);
            }
            self.current.store(gen, Relaxed);
            self.recorded.store(1, Relaxed);
        }
        bits[gen * WORDS + word].fetch_or(mask, Relaxed);
    }

    /// Counts a computed key just registered, and whether the sweep evicted it
    /// recently.
    pub(crate) fn registered(&self, key: &str) {
        if let Some(bits) = self.bits.get() {
            let (word, mask) = position(key);
            let found = bits[word].load(Relaxed) & mask != 0
                || bits[WORDS + word].load(Relaxed) & mask != 0;
            if found {
                self.returned.fetch_add(1, Relaxed);
            }
        }
        self.fresh.fetch_add(1, Relaxed);
    }

    /// Once a window of new keys has registered: whether half of them or more had
    /// been evicted, and a warning is due (at most one a minute). Called by the
    /// sweep.
    pub(crate) fn judge(&self) -> Option<Thrash> {
        if self.fresh.load(Acquire) < WINDOW {
            return None;
        }
        let fresh = self.fresh.swap(0, AcqRel);
        let returned = self.returned.swap(0, AcqRel).min(fresh);
        if returned * 2 < fresh {
            return None;
        }
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if warned.is_some_and(|at| now.duration_since(at) < QUIET) {
            return None;
        }
        *warned = Some(now);
        Some(Thrash { returned, fresh })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(r: &Returns, keys: impl IntoIterator<Item = String>) -> Option<Thrash> {
        let mut verdict = None;
        for k in keys {
            r.registered(&k);
            verdict = verdict.or(r.judge());
        }
        verdict
    }

    #[test]
    fn keys_evicted_and_back_are_told_from_new_ones() {
        let r = Returns::new();
        // Before any eviction nothing is allocated and nothing comes back.
        assert_eq!(register(&r, (0..1_000).map(|i| format!("a{i}"))), None);
        assert!(r.bits.get().is_none());
        for i in 0..5_000 {
            r.evicted(&format!("b{i}"));
        }
        // Keys never evicted: far below half, however many.
        assert_eq!(register(&r, (0..20_000).map(|i| format!("c{i}"))), None);
        // The evicted keys, back: the first full window says so.
        let t = register(&r, (0..1_000).map(|i| format!("b{i}"))).unwrap();
        assert_eq!(t.fresh, WINDOW);
        assert!(t.returned * 2 >= t.fresh, "{t:?}");
        // At most one warning a minute.
        assert_eq!(register(&r, (1_000..3_000).map(|i| format!("b{i}"))), None);
    }

    #[test]
    fn old_evictions_age_out_and_recent_ones_stay() {
        let r = Returns::new();
        for i in 0..GENERATION {
            r.evicted(&format!("old{i}"));
        }
        // Two generations later the old keys are forgotten.
        for i in 0..2 * GENERATION {
            r.evicted(&format!("new{i}"));
        }
        let found = |prefix: &str, n: usize| {
            let before = r.returned.load(Relaxed);
            for i in 0..n {
                r.registered(&format!("{prefix}{i}"));
            }
            r.returned.load(Relaxed) - before
        };
        let old = found("old", 10_000);
        assert!(old < 2_000, "{old} of 10000 aged-out keys found");
        // The previous generation still answers for its keys.
        let recent = found("new", 10_000);
        assert_eq!(recent, 10_000);
    }
}
