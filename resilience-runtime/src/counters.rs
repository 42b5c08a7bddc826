//! Counters that many threads bump at once without sharing a cache line: each
//! thread adds to its own stripe and a read sums the stripes.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

use crossbeam_utils::CachePadded;

fn stripe_count() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        cpus.next_power_of_two().clamp(1, 8)
    })
}

#[inline]
fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static SLOT: Cell<usize> = const { Cell::new(usize::MAX) });
    SLOT.with(|s| {
        let v = s.get();
        if v != usize::MAX {
            return v;
        }
        let v = NEXT.fetch_add(1, Relaxed);
        s.set(v);
        v
    })
}

/// A counter striped over cache lines (one stripe per CPU, up to 8).
pub(crate) struct Striped {
    cells: Box<[CachePadded<AtomicU64>]>,
}

impl Striped {
    pub(crate) fn new() -> Self {
        Self {
            cells: (0..stripe_count())
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        }
    }

    #[inline(always)]
    pub(crate) fn add(&self, n: u64) {
        let i = thread_slot() & (self.cells.len() - 1);
        self.cells[i].fetch_add(n, Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.cells
            .iter()
            .map(|c| c.load(Relaxed))
            .fold(0, u64::wrapping_add)
    }

    pub(crate) fn reset(&self) {
        for c in self.cells.iter() {
            c.store(0, Relaxed);
        }
    }
}

/// The counters behind [`crate::ServiceStatus`].
pub(crate) struct Counters {
    pub successes: Striped,
    pub rejections: Striped,
    pub failures: AtomicU64,
    pub ignored: AtomicU64,
    pub slow_calls: AtomicU64,
    pub timeouts: AtomicU64,
    pub retries: AtomicU64,
    pub fallbacks: AtomicU64,
}

impl Counters {
    pub(crate) fn new() -> Self {
        Self {
            successes: Striped::new(),
            rejections: Striped::new(),
            failures: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            slow_calls: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
        }
    }

    pub(crate) fn reset(&self) {
        self.successes.reset();
        self.rejections.reset();
        for c in [
            &self.failures,
            &self.ignored,
            &self.slow_calls,
            &self.timeouts,
            &self.retries,
            &self.fallbacks,
        ] {
            c.store(0, Relaxed);
        }
    }
}

/// A service's counters, to carry over a restart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[allow(missing_docs)]
pub struct CounterSnapshot {
    pub successes: u64,
    pub failures: u64,
    pub ignored: u64,
    pub slow_calls: u64,
    pub rejections: u64,
    pub timeouts: u64,
    pub retries: u64,
    pub fallbacks: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            successes: self.successes.get(),
            failures: self.failures.load(Relaxed),
            ignored: self.ignored.load(Relaxed),
            slow_calls: self.slow_calls.load(Relaxed),
            rejections: self.rejections.get(),
            timeouts: self.timeouts.load(Relaxed),
            retries: self.retries.load(Relaxed),
            fallbacks: self.fallbacks.load(Relaxed),
        }
    }

    /// Adds a snapshot's counts to these (counts since the restore are kept).
    pub(crate) fn restore(&self, s: &CounterSnapshot) {
        self.successes.add(s.successes);
        self.rejections.add(s.rejections);
        self.failures.fetch_add(s.failures, Relaxed);
        self.ignored.fetch_add(s.ignored, Relaxed);
        self.slow_calls.fetch_add(s.slow_calls, Relaxed);
        self.timeouts.fetch_add(s.timeouts, Relaxed);
        self.retries.fetch_add(s.retries, Relaxed);
        self.fallbacks.fetch_add(s.fallbacks, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_sum_across_threads() {
        let c = std::sync::Arc::new(Striped::new());
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.add(1)))
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(c.get(), 4000);
        c.reset();
        assert_eq!(c.get(), 0);
    }
}
