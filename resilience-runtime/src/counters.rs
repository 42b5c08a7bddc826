//! The counters behind [`crate::ServiceStatus`], exact across threads and bumped
//! without a locked instruction on the common path.
//!
//! A service keeps shared counts (bumped with an atomic add) and cache lines of its
//! own, each of which belongs to one thread at a time, which bumps it with a plain
//! load and store (a locked add drains the store buffer, which costs more than the
//! rest of a closed-breaker call). A thread claims a line index on its first
//! protected call and gives it back when it exits; threads beyond the line count,
//! and services with no own lines (computed keys, of which there may be very many),
//! use the shared counts. The shared count of successes is the service's
//! [`Head`], which it lays beside what else a call reads, so a computed key's
//! successful calls count in the registry map's entry, on the line the lookup has
//! just read, rather than on a line of their own (with 100,000 keys in a shuffled
//! order, one cache miss a call less); the other shared counts, which only calls
//! off the lane add to, are kept apart. A read sums the shared counts and the
//! lines; a reset
//! subtracts what it read from the shared counts, so it never races an owner's
//! store.

use std::cell::Cell;
use std::sync::atomic::{
    AtomicU64, AtomicUsize,
    Ordering::{AcqRel, Relaxed, Release},
};
use std::sync::{Mutex, OnceLock};

/// What a service counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum Counter {
    Successes = 0,
    Failures,
    Ignored,
    SlowCalls,
    Rejections,
    Timeouts,
    Retries,
    Fallbacks,
}

const KINDS: usize = 8;

/// One thread's counts (or the shared ones), alone on its cache lines (128 bytes:
/// the adjacent-line prefetcher pairs lines).
#[repr(align(128))]
struct Line([AtomicU64; KINDS]);

impl Line {
    fn new() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

/// At most this many threads own a line at once (bits of `CLAIMED`).
const MAX_OWNED: usize = 64;

/// Own lines per service: two per CPU, at least 4, at most 64.
pub(crate) fn owned_lines() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        (2 * cpus).clamp(4, MAX_OWNED)
    })
}

/// Line indices held by live threads (bit `i - 1` for line `i`).
static CLAIMED: AtomicU64 = AtomicU64::new(0);

/// The highest line index any thread has claimed: lines past it were never
/// counted on, so a sum over every service's (or bulkhead's) lines may stop there.
static HIGHEST: AtomicUsize = AtomicUsize::new(0);

/// How many own lines may hold counts: the highest index claimed so far. A read
/// that misses a claim made meanwhile misses only counts made after it.
// The loom models give their threads lines by hand and sum them all.
#[cfg(not(resilience_loom))]
#[inline]
pub(crate) fn lines_in_use() -> usize {
    HIGHEST.load(std::sync::atomic::Ordering::Acquire)
}

/// The size of a line: own lines are found by their byte offset.
pub(crate) const LINE: usize = std::mem::size_of::<Line>();

/// [`SLOT`] before this thread's first count.
const UNCLAIMED: usize = usize::MAX;
/// [`SLOT`] when this thread has no line of its own (all were taken).
const NONE: usize = usize::MAX - 1;

thread_local! {
    /// This thread's own line `i` (bit `i - 1` of [`CLAIMED`]), as its byte offset
    /// in a service's lines, or `UNCLAIMED` or `NONE`: both lie past every
    /// service's lines, so one comparison finds the line.
    static SLOT: Cell<usize> = const { Cell::new(UNCLAIMED) };
    static RELEASE: SlotRelease = const { SlotRelease };
}

/// Gives this thread's line back when the thread exits.
struct SlotRelease;

impl Drop for SlotRelease {
    fn drop(&mut self) {
        let _ = SLOT.try_with(|s| {
            let off = s.replace(NONE);
            if off != UNCLAIMED && off != NONE {
                // Release: the next owner sees this thread's last counts.
                CLAIMED.fetch_and(!(1u64 << (off / LINE - 1)), Release);
            }
        });
    }
}

/// This thread's [`SLOT`] as it is: `UNCLAIMED` before its first count (which
/// claims it, off the lanes), so it lies past every line until then.
#[cfg(not(resilience_loom))]
#[inline(always)]
pub(crate) fn thread_slot() -> usize {
    SLOT.with(Cell::get)
}

/// This thread's [`SLOT`], claimed on its first count.
#[inline(always)]
fn thread_line() -> usize {
    let off = SLOT.with(Cell::get);
    if off != UNCLAIMED {
        return off;
    }
    claim_line()
}

#[cold]
fn claim_line() -> usize {
    let limit = owned_lines();
    let mut claimed = CLAIMED.load(Relaxed);
    let line = loop {
        let free = (0..limit).find(|b| claimed & (1u64 << b) == 0);
        let Some(b) = free else { break NONE };
        // Acquire: this thread sees the counts of the line's previous owner.
        match CLAIMED.compare_exchange_weak(claimed, claimed | (1u64 << b), AcqRel, Relaxed) {
            Ok(_) => {
                // Release: a sum that reads the new highest sees the claim.
                HIGHEST.fetch_max(b + 1, AcqRel);
                break (b + 1) * LINE;
            }
            Err(now) => claimed = now,
        }
    };
    // A thread being torn down has no thread locals left to give its line back
    // with: it keeps none (`NONE`) and counts on the shared counts.
    if line != NONE && RELEASE.try_with(|_| ()).is_err() {
        CLAIMED.fetch_and(!(1u64 << (line / LINE - 1)), Release);
        let _ = SLOT.try_with(|s| s.set(NONE));
        return NONE;
    }
    let _ = SLOT.try_with(|s| s.set(line));
    line
}

/// What a computed key's successful call writes of its service's counters: the
/// shared count of successes. Kept apart from the rest ([`Counters`]) so that the
/// service can lay it beside what else such a call reads (see the service's
/// layout).
pub(crate) struct Head {
    /// The shared count of successes.
    successes: AtomicU64,
}

impl Head {
    /// Counts a success on the shared count.
    #[inline(always)]
    pub(crate) fn add_success(&self) {
        self.successes.fetch_add(1, Relaxed);
    }
}

/// A service's counters, but their [`Head`].
pub(crate) struct Counters {
    /// Line 0 is not counted on (it keeps an own line's offset a multiple of its
    /// index); lines 1.. are own lines. None for a service without own lines.
    lines: Box<[Line]>,
    /// The shared counts, but successes (in the [`Head`]).
    shared: [AtomicU64; KINDS],
    /// Serializes resets and restores (both adjust the shared counts by what they
    /// read).
    adjust: Mutex<()>,
}

/// `owned`: give threads their own lines (fixed-name services); without, every
/// count is an atomic add on the shared counts (computed keys: nothing apart).
/// Also returns the bytes of the own lines (see [`Counts::lines_bytes`]).
pub(crate) fn new(owned: bool) -> (Head, usize, Counters) {
    let lines: Box<[Line]> = if owned {
        (0..=owned_lines()).map(|_| Line::new()).collect()
    } else {
        Box::new([])
    };
    (
        Head {
            successes: AtomicU64::new(0),
        },
        lines.len() * LINE,
        Counters {
            lines,
            shared: std::array::from_fn(|_| AtomicU64::new(0)),
            adjust: Mutex::new(()),
        },
    )
}

/// A line this thread owns (see [`Counts::own_line`]).
pub(crate) struct OwnLine<'a>(&'a Line);

impl OwnLine<'_> {
    /// Counts one `c`: a plain load and store, this thread alone writes the line
    /// (see the module docs).
    #[inline(always)]
    pub(crate) fn add(&self, c: Counter) {
        let a = &self.0 .0[c as usize];
        a.store(a.load(Relaxed).wrapping_add(1), Relaxed);
    }
}

/// A service's counters: its [`Head`] and the rest.
#[derive(Clone, Copy)]
pub(crate) struct Counts<'a> {
    pub(crate) head: &'a Head,
    /// The bytes of `Counters::lines`: an own line's offset is below it.
    pub(crate) lines_bytes: &'a usize,
    pub(crate) rest: &'a Counters,
}

impl<'a> Counts<'a> {
    /// Counts one `c`. A service without own lines (a computed key) counts on the
    /// shared counts without looking at this thread's line, so a thread that only
    /// calls computed keys never claims one.
    #[inline(always)]
    pub(crate) fn add(self, c: Counter) {
        if *self.lines_bytes == 0 {
            return self.add_shared(c, 1);
        }
        match self.line_at(thread_line()) {
            Some(line) => line.add(c),
            None => self.add_shared(c, 1),
        }
    }

    /// This thread's own line, if it has claimed one (the common case of
    /// [`Counts::add`], without its claim on a first count).
    #[inline(always)]
    pub(crate) fn own_line(self) -> Option<OwnLine<'a>> {
        self.line_at(SLOT.with(Cell::get))
    }

    /// The own line at byte offset `off` (a [`SLOT`]), if this service has it. One
    /// comparison: a claimed offset is at least one line (line 0 is not used), and
    /// `UNCLAIMED` and `NONE` lie past every service's lines.
    #[inline(always)]
    fn line_at(self, off: usize) -> Option<OwnLine<'a>> {
        if off < *self.lines_bytes {
            // SAFETY: `off` is a nonzero multiple of `LINE` (set by `claim_line`)
            // below the bytes of `lines`, so it is the offset of an own line.
            let line = unsafe { &*self.rest.lines.as_ptr().byte_add(off) };
            Some(OwnLine(line))
        } else {
            None
        }
    }

    /// The shared count of `c`.
    #[inline(always)]
    fn shared(self, c: Counter) -> &'a AtomicU64 {
        match c {
            Counter::Successes => &self.head.successes,
            _ => &self.rest.shared[c as usize],
        }
    }

    #[inline(always)]
    fn add_shared(self, c: Counter, n: u64) {
        self.shared(c).fetch_add(n, Relaxed);
    }

    /// The count of `c` since start or the last reset.
    pub(crate) fn get(self, c: Counter) -> u64 {
        self.rest
            .lines
            .iter()
            .skip(1)
            .map(|l| l.0[c as usize].load(Relaxed))
            .fold(self.shared(c).load(Relaxed), u64::wrapping_add)
    }

    /// Back to zero. Counts made while it runs may or may not survive it.
    pub(crate) fn reset(self) {
        let _g = self.rest.adjust.lock().unwrap_or_else(|p| p.into_inner());
        for c in ALL {
            let now = self.get(c);
            self.shared(c).fetch_sub(now, Relaxed);
        }
    }

    pub(crate) fn snapshot(self) -> CounterSnapshot {
        CounterSnapshot {
            successes: self.get(Counter::Successes),
            failures: self.get(Counter::Failures),
            ignored: self.get(Counter::Ignored),
            slow_calls: self.get(Counter::SlowCalls),
            rejections: self.get(Counter::Rejections),
            timeouts: self.get(Counter::Timeouts),
            retries: self.get(Counter::Retries),
            fallbacks: self.get(Counter::Fallbacks),
        }
    }

    /// Adds a snapshot's counts to these (counts since the restore are kept).
    pub(crate) fn restore(self, s: &CounterSnapshot) {
        let _g = self.rest.adjust.lock().unwrap_or_else(|p| p.into_inner());
        for (c, n) in [
            (Counter::Successes, s.successes),
            (Counter::Failures, s.failures),
            (Counter::Ignored, s.ignored),
            (Counter::SlowCalls, s.slow_calls),
            (Counter::Rejections, s.rejections),
            (Counter::Timeouts, s.timeouts),
            (Counter::Retries, s.retries),
            (Counter::Fallbacks, s.fallbacks),
        ] {
            self.add_shared(c, n);
        }
    }
}

const ALL: [Counter; KINDS] = [
    Counter::Successes,
    Counter::Failures,
    Counter::Ignored,
    Counter::SlowCalls,
    Counter::Rejections,
    Counter::Timeouts,
    Counter::Retries,
    Counter::Fallbacks,
];

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A service's counters, as it keeps them.
    struct Pair(Head, usize, Counters);

    impl Pair {
        fn new(owned: bool) -> Self {
            let (head, lines_bytes, rest) = new(owned);
            Self(head, lines_bytes, rest)
        }
        fn counts(&self) -> Counts<'_> {
            Counts {
                head: &self.0,
                lines_bytes: &self.1,
                rest: &self.2,
            }
        }
    }

    fn hammer(c: &Arc<Pair>, threads: usize, each: u64) {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..each {
                        c.counts().add(Counter::Successes);
                        c.counts().add(Counter::Rejections);
                    }
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
    }

    #[test]
    fn owned_lines_sum_exactly_across_threads() {
        let c = Arc::new(Pair::new(true));
        hammer(&c, 4, 10_000);
        assert_eq!(c.counts().get(Counter::Successes), 40_000);
        assert_eq!(c.counts().get(Counter::Rejections), 40_000);
        assert_eq!(c.counts().get(Counter::Failures), 0);
    }

    #[test]
    fn more_threads_than_lines_share_the_shared_counts_exactly() {
        // Every thread stays alive until all have counted, so most find no free line.
        let c = Arc::new(Pair::new(true));
        let n = MAX_OWNED + 8;
        let barrier = Arc::new(std::sync::Barrier::new(n));
        let hs: Vec<_> = (0..n)
            .map(|_| {
                let (c, barrier) = (c.clone(), barrier.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.counts().add(Counter::Successes);
                    }
                    barrier.wait();
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(c.counts().get(Counter::Successes), 1000 * n as u64);
    }

    #[test]
    fn lines_of_exited_threads_are_reused_and_keep_their_counts() {
        let c = Arc::new(Pair::new(true));
        for _ in 0..3 * MAX_OWNED {
            hammer(&c, 1, 10);
        }
        assert_eq!(c.counts().get(Counter::Successes), 30 * MAX_OWNED as u64);
    }

    #[test]
    fn shared_only_counters_are_exact() {
        let c = Arc::new(Pair::new(false));
        hammer(&c, 4, 5_000);
        assert_eq!(c.counts().get(Counter::Successes), 20_000);
    }

    /// A thread that counts only on services without own lines (computed keys)
    /// claims no line: lines are few, and threads of fixed names need them.
    #[cfg(not(resilience_loom))]
    #[test]
    fn counting_without_own_lines_claims_no_line() {
        let shared = Arc::new(Pair::new(false));
        let owned = Arc::new(Pair::new(true));
        std::thread::spawn(move || {
            for c in [Counter::Successes, Counter::Failures, Counter::Rejections] {
                shared.counts().add(c);
            }
            assert_eq!(thread_slot(), UNCLAIMED);
            assert_eq!(shared.counts().get(Counter::Failures), 1);
            // A service with own lines claims one on its first count.
            owned.counts().add(Counter::Successes);
            assert_ne!(thread_slot(), UNCLAIMED);
            assert_eq!(owned.counts().get(Counter::Successes), 1);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn reset_and_restore() {
        let c = Arc::new(Pair::new(true));
        hammer(&c, 2, 100);
        c.counts().reset();
        assert_eq!(c.counts().snapshot(), CounterSnapshot::default());
        c.counts().add(Counter::Timeouts);
        c.counts().restore(&CounterSnapshot {
            timeouts: 5,
            fallbacks: 2,
            ..CounterSnapshot::default()
        });
        let s = c.counts().snapshot();
        assert_eq!((s.timeouts, s.fallbacks, s.successes), (6, 2, 0));
        hammer(&c, 2, 10);
        assert_eq!(c.counts().get(Counter::Successes), 20);
    }
}
