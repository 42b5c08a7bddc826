//! What a closed breaker remembers about recent calls, and the rule that opens it.
//!
//! Every window is lock-free. A success recorded into a count window that is full
//! and holds no failure and no slow call changes nothing, so that path only reads.
//! A count window of up to 57 outcomes (28 when slow calls are tracked) is one
//! word, and recording into it one compare-and-swap.

use std::sync::atomic::Ordering::Relaxed;

use crate::sync::{AtomicU64, AtomicU8};
use std::time::Duration;

use crate::clock::{self, Nanos};
use crate::config::{BreakerConfig, BreakerMode, Window as WindowConfig};
use crate::events::TransitionReason;

/// Why a window asks the breaker to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trip {
    FailureRate,
    SlowCallRate,
    ConsecutiveFailures,
}

impl Trip {
    pub(crate) fn reason(self) -> TransitionReason {
        match self {
            Trip::FailureRate => TransitionReason::FailureRate,
            Trip::SlowCallRate => TransitionReason::SlowCallRate,
            Trip::ConsecutiveFailures => TransitionReason::ConsecutiveFailures,
        }
    }
}

/// What a window holds, to carry it into a window of other settings (live
/// configuration) or over a restart.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowSnapshot {
    /// Consecutive mode: the current run of failures.
    Consecutive {
        /// Failures in a row.
        run: u32,
    },
    /// A count window: its outcomes, oldest first (bit 0: failure, bit 1: slow).
    Count {
        /// One byte per outcome.
        outcomes: Vec<u8>,
    },
    /// A time window: its buckets.
    Time {
        /// The buckets still inside the window.
        buckets: Vec<BucketSnapshot>,
    },
}

/// One bucket of a time window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BucketSnapshot {
    /// How long ago the bucket began, in nanoseconds.
    pub age_ns: u64,
    /// Outcomes in it.
    pub calls: u64,
    /// Failures among them.
    pub failures: u64,
    /// Slow calls among them.
    pub slow: u64,
}

/// An outcome as the window sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub failure: bool,
    pub slow: bool,
}

// `repr(C)`: `word`, which a closed call reads, first (it follows the breaker's
// state word).
#[repr(C)]
pub(crate) struct Window {
    /// Zero exactly when recording a success would change nothing, so the call
    /// path checks that with one load, whatever the mode: in consecutive mode the
    /// run of failures; a short count window itself ([`PackedWindow`]); a longer
    /// count window's stats word (whose `NOT_FULL` bit is set until every slot
    /// holds an outcome); 1 for a time window, which records every outcome.
    word: AtomicU64,
    /// The mode and its settings and state, apart: a closed call that changes
    /// nothing reads `word` alone (see the service's layout).
    kind: crate::cold::ColdBox<Kind>,
}

enum Kind {
    Consecutive {
        threshold: u32,
    },
    /// A count window that fits in `word` (see [`PackedWindow`]).
    Packed(PackedWindow),
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    pub(crate) fn new(config: &BreakerConfig) -> Self {
        let (word, kind) = match config.mode {
            BreakerMode::Consecutive { failure_threshold } => (
                0,
                Kind::Consecutive {
                    threshold: failure_threshold,
                },
            ),
            BreakerMode::Rate {
                failure_rate,
                window: WindowConfig::Calls(n),
                min_calls,
            } => {
                let rule = Rule {
                    min_calls,
                    rate: failure_rate,
                    slow_rate: config.slow_call_rate,
                };
                match PackedWindow::new(n, config.slow_call.is_some(), rule) {
                    Some(w) => (w.empty(), Kind::Packed(w)),
                    None => (NOT_FULL, Kind::Count(CountWindow::new(n, rule))),
                }
            }
            BreakerMode::Rate {
                failure_rate,
                window: WindowConfig::Time(d),
                min_calls,
            } => (
                1,
                Kind::Time(TimeWindow::new(
                    d,
                    Rule {
                        min_calls,
                        rate: failure_rate,
                        slow_rate: config.slow_call_rate,
                    },
                )),
            ),
        };
        Self {
            word: AtomicU64::new(word),
            kind: crate::cold::ColdBox::new(kind),
        }
    }

    /// Records one outcome; says whether the breaker should open.
    #[inline(always)]
    pub(crate) fn record(&self, o: Outcome) -> Option<Trip> {
        match &*self.kind {
            Kind::Consecutive { threshold } => {
                let run = &self.word;
                if o.failure {
                    (run.fetch_add(1, Relaxed) + 1 >= u64::from(*threshold))
                        .then_some(Trip::ConsecutiveFailures)
                } else {
                    if run.load(Relaxed) != 0 {
                        run.store(0, Relaxed);
                    }
                    None
                }
            }
            Kind::Packed(w) => w.record(&self.word, o),
            Kind::Count(w) => w.record(&self.word, o),
            Kind::Time(w) => w.record(o, clock::now_nanos()),
        }
    }

    /// Whether recording a success now would write nothing.
    #[inline(always)]
    pub(crate) fn success_changes_nothing(&self) -> bool {
        self.word.load(Relaxed) == 0
    }

    pub(crate) fn clear(&self) {
        match &*self.kind {
            Kind::Consecutive { .. } => self.word.store(0, Relaxed),
            Kind::Packed(w) => self.word.store(w.empty(), Relaxed),
            Kind::Count(w) => w.clear(&self.word),
            Kind::Time(w) => w.clear(),
        }
    }

    /// Failures / recorded over the window, once `min_calls` outcomes are in it.
    pub(crate) fn failure_rate(&self) -> Option<f64> {
        self.rates().map(|(f, _)| f)
    }

    /// Slow calls / recorded over the window, once `min_calls` outcomes are in it.
    pub(crate) fn slow_call_rate(&self) -> Option<f64> {
        self.rates().map(|(_, s)| s)
    }

    fn rates(&self) -> Option<(f64, f64)> {
        match &*self.kind {
            Kind::Consecutive { .. } => None,
            Kind::Packed(w) => w.rates(self.word.load(Relaxed)),
            Kind::Count(w) => w.rates(&self.word),
            Kind::Time(w) => w.rates(clock::now_nanos()),
        }
    }

    /// What the window holds now.
    pub(crate) fn snapshot(&self) -> WindowSnapshot {
        match &*self.kind {
            Kind::Consecutive { .. } => WindowSnapshot::Consecutive {
                run: u32::try_from(self.word.load(Relaxed)).unwrap_or(u32::MAX),
            },
            Kind::Packed(w) => WindowSnapshot::Count {
                outcomes: w.outcomes(self.word.load(Relaxed)),
            },
            Kind::Count(w) => WindowSnapshot::Count {
                outcomes: w.outcomes(),
            },
            Kind::Time(w) => WindowSnapshot::Time {
                buckets: w.buckets(clock::now_nanos()),
            },
        }
    }

    /// Fills a fresh window with what still fits of `snap`: the newest outcomes of a
    /// count window, the buckets of a time window still inside the period, a run of
    /// failures (also the trailing failures of a count window). Other mode changes
    /// start empty: a time window's counts have no order, and a run of failures says
    /// nothing about the successes before it.
    pub(crate) fn restore(&self, snap: &WindowSnapshot) {
        match (&*self.kind, snap) {
            (Kind::Consecutive { .. }, WindowSnapshot::Consecutive { run: r }) => {
                self.word.store(u64::from(*r), Relaxed)
            }
            (Kind::Consecutive { .. }, WindowSnapshot::Count { outcomes }) => {
                let trailing = outcomes.iter().rev().take_while(|o| *o & FAILURE != 0);
                self.word.store(
                    u64::from(u32::try_from(trailing.count()).unwrap_or(u32::MAX)),
                    Relaxed,
                )
            }
            (Kind::Packed(w), WindowSnapshot::Count { outcomes }) => {
                self.word.store(w.restored(outcomes), Relaxed)
            }
            (Kind::Count(w), WindowSnapshot::Count { outcomes }) => w.restore(&self.word, outcomes),
            (Kind::Time(w), WindowSnapshot::Time { buckets }) => {
                w.restore(buckets, clock::now_nanos())
            }
            _ => {}
        }
    }
}

/// A rate-mode window's rule: it opens when, with at least `min_calls` outcomes in
/// the window, either rate reaches its threshold. Every kind of window counts its
/// outcomes its own way and asks this.
#[derive(Clone, Copy, Debug)]
struct Rule {
    min_calls: u32,
    rate: f64,
    slow_rate: f64,
}

impl Rule {
    fn decide(&self, calls: u64, failures: u64, slow: u64) -> Option<Trip> {
        if calls == 0 || calls < u64::from(self.min_calls) {
            return None;
        }
        // Compare without division: failures / calls >= rate.
        if failures > 0 && failures as f64 >= self.rate * calls as f64 {
            return Some(Trip::FailureRate);
        }
        if slow > 0 && slow as f64 >= self.slow_rate * calls as f64 {
            return Some(Trip::SlowCallRate);
        }
        None
    }

    /// (failures, slow calls) / outcomes, once there are `min_calls` of them.
    fn rates(&self, calls: u64, failures: u64, slow: u64) -> Option<(f64, f64)> {
        (calls > 0 && calls >= u64::from(self.min_calls))
            .then(|| (failures as f64 / calls as f64, slow as f64 / calls as f64))
    }
}

const FAILURE: u8 = 1;
const SLOW: u8 = 2;
const FILLED: u8 = 4;

/// A count window small enough to live in the window's word, so recording an
/// outcome is one compare-and-swap of that word and nothing else: no slot to
/// claim, no ring to index (a division), no second word to count in.
///
/// The word holds the window as shift registers, the newest outcome in the low
/// bit: failures in bits `0..n`, slow calls in bits `n..2n` when they are
/// tracked, and in the top bits ([`PACKED_LEFT_SHIFT`] up) how many outcomes the
/// window still needs to be full. So, like a ring's stats word, it is zero exactly
/// when the window is full of successes that were not slow. Up to
/// [`PACKED_MAX_SLOW`] outcomes with slow calls tracked, [`PACKED_MAX`] without:
/// slow calls are tracked unless the breaker has no `slow_call` (its outcomes are
/// then never slow) and the window is too long to track them.
struct PackedWindow {
    n: u32,
    /// `(1 << n) - 1`.
    mask: u64,
    slow: bool,
    rule: Rule,
    /// How many failures, and how many slow calls, open the breaker once the
    /// window is full ([`u8::MAX`]: none can): [`Rule::decide`] worked out when
    /// the window is made, so a call of a full window compares integers. (A window
    /// not full yet, in its first `n` calls after each change of state, decides
    /// by the rule itself.)
    full_failures: u8,
    full_slow: u8,
}

/// Where a packed window's count of outcomes still to fill it starts.
const PACKED_LEFT_SHIFT: u32 = 57;
/// The longest packed window without slow calls (its bits below the count).
const PACKED_MAX: u32 = PACKED_LEFT_SHIFT;
/// The longest packed window with slow calls.
const PACKED_MAX_SLOW: u32 = PACKED_LEFT_SHIFT / 2;

impl PackedWindow {
    /// A packed window of `n` outcomes, or `None` when they do not fit.
    fn new(n: u32, slow_call: bool, rule: Rule) -> Option<Self> {
        let n = n.max(1);
        let slow = slow_call || n <= PACKED_MAX_SLOW;
        (n <= if slow { PACKED_MAX_SLOW } else { PACKED_MAX }).then(|| {
            // The fewest failures, and slow calls, of `n` outcomes that open it.
            let calls = u64::from(n);
            let fewest = |trips: &dyn Fn(u64) -> bool| {
                (1..=calls).find(|&k| trips(k)).map_or(u8::MAX, |k| k as u8)
            };
            Self {
                n,
                mask: (1 << n) - 1,
                slow,
                rule,
                full_failures: fewest(&|k| rule.decide(calls, k, 0).is_some()),
                full_slow: fewest(&|k| rule.decide(calls, 0, k).is_some()),
            }
        })
    }

    /// The word of the empty window.
    fn empty(&self) -> u64 {
        u64::from(self.n) << PACKED_LEFT_SHIFT
    }

    /// The word after recording `o` in `word`.
    #[inline(always)]
    fn next(&self, word: u64, o: Outcome) -> u64 {
        debug_assert!(self.slow || !o.slow, "a slow call in a window without them");
        let left = (word >> PACKED_LEFT_SHIFT).saturating_sub(1);
        let failures = ((word << 1) | u64::from(o.failure)) & self.mask;
        let slow = if self.slow {
            ((((word >> self.n) << 1) | u64::from(o.slow)) & self.mask) << self.n
        } else {
            0
        };
        (left << PACKED_LEFT_SHIFT) | slow | failures
    }

    /// (outcomes, failures, slow calls) in `word`.
    #[inline(always)]
    fn counts(&self, word: u64) -> (u64, u64, u64) {
        let calls = u64::from(self.n).saturating_sub(word >> PACKED_LEFT_SHIFT);
        let failures = u64::from((word & self.mask).count_ones());
        let slow = if self.slow {
            u64::from(((word >> self.n) & self.mask).count_ones())
        } else {
            0
        };
        (calls, failures, slow)
    }

    #[inline(always)]
    fn record(&self, word: &AtomicU64, o: Outcome) -> Option<Trip> {
        let mut cur = word.load(Relaxed);
        if !o.failure && !o.slow && cur == 0 {
            // A success replacing a success: nothing to write.
            return None;
        }
        let new = loop {
            let new = self.next(cur, o);
            if new == cur {
                break new;
            }
            match word.compare_exchange_weak(cur, new, Relaxed, Relaxed) {
                Ok(_) => break new,
                Err(now) => cur = now,
            }
        };
        self.decide(new)
    }

    /// [`Rule::decide`] on `word`: by the full window's thresholds once it is full.
    #[inline(always)]
    fn decide(&self, word: u64) -> Option<Trip> {
        if word >> PACKED_LEFT_SHIFT != 0 {
            let (calls, failures, slow) = self.counts(word);
            return self.rule.decide(calls, failures, slow);
        }
        let failures = word & self.mask;
        if failures != 0 && failures.count_ones() >= u32::from(self.full_failures) {
            return Some(Trip::FailureRate);
        }
        let slow = (word >> self.n) & self.mask;
        if self.slow && slow != 0 && slow.count_ones() >= u32::from(self.full_slow) {
            return Some(Trip::SlowCallRate);
        }
        None
    }

    fn rates(&self, word: u64) -> Option<(f64, f64)> {
        let (calls, failures, slow) = self.counts(word);
        self.rule.rates(calls, failures, slow)
    }

    /// The outcomes in `word`, oldest first.
    fn outcomes(&self, word: u64) -> Vec<u8> {
        let (calls, _, _) = self.counts(word);
        (0..calls)
            .rev()
            .map(|i| {
                let failure = if (word >> i) & 1 != 0 { FAILURE } else { 0 };
                let slow = if self.slow && (word >> (u64::from(self.n) + i)) & 1 != 0 {
                    SLOW
                } else {
                    0
                };
                failure | slow
            })
            .collect()
    }

    /// The word of an empty window after recording the newest of `outcomes`.
    fn restored(&self, outcomes: &[u8]) -> u64 {
        let kept = &outcomes[outcomes.len().saturating_sub(self.n as usize)..];
        kept.iter().fold(self.empty(), |word, o| {
            self.next(
                word,
                Outcome {
                    failure: o & FAILURE != 0,
                    slow: self.slow && o & SLOW != 0,
                },
            )
        })
    }
}

/// Stats word of a count window (kept in its [`Window`]): failures in bits 0..24,
/// slow calls in bits 24..48, and `NOT_FULL` until every slot holds an outcome. So
/// it is zero exactly when the window is full of successes that were not slow.
const SLOW_SHIFT: u32 = 24;
const FIELD: u64 = (1 << SLOW_SHIFT) - 1;
const NOT_FULL: u64 = 1 << 63;

/// The last N outcomes, in a ring of one byte per slot (its stats word is the
/// [`Window`]'s).
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    head: AtomicU64,
    rule: Rule,
}

impl CountWindow {
    fn new(n: u32, rule: Rule) -> Self {
        Self {
            slots: (0..n.max(1)).map(|_| AtomicU8::new(0)).collect(),
            head: AtomicU64::new(0),
            rule,
        }
    }

    #[inline(always)]
    fn record(&self, stats: &AtomicU64, o: Outcome) -> Option<Trip> {
        if !o.failure && !o.slow && stats.load(Relaxed) == 0 {
            // A success replacing a success: nothing to write.
            return None;
        }
        self.push(stats, o)
    }

    #[cold]
    fn push(&self, stats_word: &AtomicU64, o: Outcome) -> Option<Trip> {
        let n = self.slots.len() as u64;
        let at = self.head.fetch_add(1, Relaxed);
        let new = FILLED | if o.failure { FAILURE } else { 0 } | if o.slow { SLOW } else { 0 };
        let old = self.slots[(at % n) as usize].swap(new, Relaxed);
        let delta = |bit: u8, shift: u32| -> (u64, u64) {
            let (was, is) = (old & bit != 0, new & bit != 0);
            (
                (u64::from(is && !was)) << shift,
                (u64::from(was && !is)) << shift,
            )
        };
        let (fa, fs) = delta(FAILURE, 0);
        let (sa, ss) = delta(SLOW, SLOW_SHIFT);
        let add = fa + sa;
        let mut sub = fs + ss;
        if at + 1 >= n && stats_word.load(Relaxed) & NOT_FULL != 0 {
            sub |= NOT_FULL;
        }
        let stats = if add != 0 {
            stats_word.fetch_add(add, Relaxed).wrapping_add(add)
        } else {
            stats_word.load(Relaxed)
        };
        let stats = if sub != 0 {
            stats_word.fetch_sub(sub, Relaxed).wrapping_sub(sub)
        } else {
            stats
        };
        let calls = (at + 1).min(n);
        self.rule
            .decide(calls, stats & FIELD, (stats >> SLOW_SHIFT) & FIELD)
    }

    /// The outcomes in the ring, oldest first.
    fn outcomes(&self) -> Vec<u8> {
        let n = self.slots.len() as u64;
        let head = self.head.load(Relaxed);
        let start = head.saturating_sub(n);
        (start..head)
            .map(|i| self.slots[(i % n) as usize].load(Relaxed) & (FAILURE | SLOW))
            .collect()
    }

    /// Fills an empty window with the newest of `outcomes`.
    fn restore(&self, stats: &AtomicU64, outcomes: &[u8]) {
        let n = self.slots.len();
        let kept = &outcomes[outcomes.len().saturating_sub(n)..];
        let (mut failures, mut slow) = (0u64, 0u64);
        for (slot, o) in self.slots.iter().zip(kept) {
            let o = o & (FAILURE | SLOW);
            failures += u64::from(o & FAILURE != 0);
            slow += u64::from(o & SLOW != 0);
            slot.store(FILLED | o, Relaxed);
        }
        let not_full = if kept.len() == n { 0 } else { NOT_FULL };
        self.head.store(kept.len() as u64, Relaxed);
        stats.store(not_full | (slow << SLOW_SHIFT) | failures, Relaxed);
    }

    fn rates(&self, stats: &AtomicU64) -> Option<(f64, f64)> {
        let n = self.slots.len() as u64;
        let calls = self.head.load(Relaxed).min(n);
        let stats = stats.load(Relaxed);
        self.rule
            .rates(calls, stats & FIELD, (stats >> SLOW_SHIFT) & FIELD)
    }

    fn clear(&self, stats: &AtomicU64) {
        for s in self.slots.iter() {
            s.store(0, Relaxed);
        }
        self.head.store(0, Relaxed);
        stats.store(NOT_FULL, Relaxed);
    }
}

/// One bucket of a time window. `stamp` is the bucket's sequence number (time since
/// the scale's origin divided by the bucket width) plus one; 0 means empty.
struct Bucket {
    stamp: AtomicU64,
    calls: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

/// The outcomes of the last period, in up to 60 buckets.
pub(crate) struct TimeWindow {
    buckets: Box<[Bucket]>,
    width: u64,
    rule: Rule,
}

impl TimeWindow {
    fn new(period: Duration, rule: Rule) -> Self {
        let secs = period.as_secs().max(1);
        let count = secs.min(60);
        let width = clock::dur_nanos(period) / count;
        Self {
            buckets: (0..count)
                .map(|_| Bucket {
                    stamp: AtomicU64::new(0),
                    calls: AtomicU64::new(0),
                    failures: AtomicU64::new(0),
                    slow: AtomicU64::new(0),
                })
                .collect(),
            width: width.max(1),
            rule,
        }
    }

    fn record(&self, o: Outcome, now: Nanos) -> Option<Trip> {
        let seq = now / self.width + 1;
        let b = &self.buckets[(seq % self.buckets.len() as u64) as usize];
        let stamp = b.stamp.load(Relaxed);
        if stamp != seq
            && stamp < seq
            && b.stamp
                .compare_exchange(stamp, seq, Relaxed, Relaxed)
                .is_ok()
        {
            b.calls.store(0, Relaxed);
            b.failures.store(0, Relaxed);
            b.slow.store(0, Relaxed);
        }
        b.calls.fetch_add(1, Relaxed);
        if o.failure {
            b.failures.fetch_add(1, Relaxed);
        }
        if o.slow {
            b.slow.fetch_add(1, Relaxed);
        }
        let (calls, failures, slow) = self.sums(seq);
        self.rule.decide(calls, failures, slow)
    }

    fn sums(&self, seq: u64) -> (u64, u64, u64) {
        let oldest = seq.saturating_sub(self.buckets.len() as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| {
                let s = b.stamp.load(Relaxed);
                s >= oldest && s <= seq && s != 0
            })
            .fold((0, 0, 0), |(c, f, s), b| {
                (
                    c + b.calls.load(Relaxed),
                    f + b.failures.load(Relaxed),
                    s + b.slow.load(Relaxed),
                )
            })
    }

    /// The buckets inside the window at `now`.
    fn buckets(&self, now: Nanos) -> Vec<BucketSnapshot> {
        let seq = now / self.width + 1;
        let oldest = seq.saturating_sub(self.buckets.len() as u64 - 1);
        self.buckets
            .iter()
            .filter_map(|b| {
                let s = b.stamp.load(Relaxed);
                (s >= oldest && s <= seq && s != 0).then(|| BucketSnapshot {
                    age_ns: now.saturating_sub((s - 1).saturating_mul(self.width)),
                    calls: b.calls.load(Relaxed),
                    failures: b.failures.load(Relaxed),
                    slow: b.slow.load(Relaxed),
                })
            })
            .collect()
    }

    /// Puts each bucket's counts into the bucket covering its start, dropping those
    /// that begin before this window's period.
    fn restore(&self, buckets: &[BucketSnapshot], now: Nanos) {
        let seq_now = now / self.width + 1;
        let oldest = seq_now.saturating_sub(self.buckets.len() as u64 - 1);
        for s in buckets {
            let Some(start) = now.checked_sub(s.age_ns) else {
                continue;
            };
            let seq = start / self.width + 1;
            if seq < oldest || seq > seq_now {
                continue;
            }
            let b = &self.buckets[(seq % self.buckets.len() as u64) as usize];
            if b.stamp.load(Relaxed) != seq {
                b.stamp.store(seq, Relaxed);
                b.calls.store(0, Relaxed);
                b.failures.store(0, Relaxed);
                b.slow.store(0, Relaxed);
            }
            // A snapshot read from disk may hold anything: keep sums far from overflow.
            let calls = s.calls.min(1 << 40);
            let failures = s.failures.min(calls);
            b.calls.fetch_add(calls, Relaxed);
            b.failures.fetch_add(failures, Relaxed);
            b.slow.fetch_add(s.slow.min(calls), Relaxed);
        }
    }

    fn rates(&self, now: Nanos) -> Option<(f64, f64)> {
        let (calls, failures, slow) = self.sums(now / self.width + 1);
        self.rule.rates(calls, failures, slow)
    }

    fn clear(&self) {
        for b in self.buckets.iter() {
            b.stamp.store(0, Relaxed);
            b.calls.store(0, Relaxed);
            b.failures.store(0, Relaxed);
            b.slow.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn rule(min_calls: u32, rate: f64, slow_rate: f64) -> Rule {
        Rule {
            min_calls,
            rate,
            slow_rate,
        }
    }

    pub(super) const S: Outcome = Outcome {
        failure: false,
        slow: false,
    };
    pub(super) const F: Outcome = Outcome {
        failure: true,
        slow: false,
    };
    const SLOW_OK: Outcome = Outcome {
        failure: false,
        slow: true,
    };

    fn window(mode: BreakerMode) -> Window {
        Window::new(&BreakerConfig {
            mode,
            slow_call: None,
            slow_call_rate: 1.0,
            cooldown: Duration::from_secs(1),
            cooldown_max: None,
            half_open_calls: 1,
            success_threshold: 1,
        })
    }

    #[test]
    fn a_success_changes_nothing_exactly_when_the_window_is_quiet() {
        let w = window(BreakerMode::Consecutive {
            failure_threshold: 3,
        });
        assert!(w.success_changes_nothing());
        assert_eq!(w.record(F), None);
        assert!(!w.success_changes_nothing(), "a run of failures to reset");
        assert_eq!(w.record(S), None);
        assert!(w.success_changes_nothing());
        assert_eq!(w.record(F), None);
        assert_eq!(w.record(F), None);
        assert_eq!(w.record(F), Some(Trip::ConsecutiveFailures), "3 in a row");

        let w = window(BreakerMode::Rate {
            failure_rate: 0.5,
            window: WindowConfig::Calls(2),
            min_calls: 2,
        });
        assert!(
            !w.success_changes_nothing(),
            "not full: a success is recorded"
        );
        assert_eq!(w.record(S), None);
        assert_eq!(w.record(S), None);
        assert!(w.success_changes_nothing(), "full of successes");
        assert_eq!(w.record(SLOW_OK), None);
        assert!(!w.success_changes_nothing(), "a slow call to slide out");
        w.clear();
        assert!(!w.success_changes_nothing(), "cleared: empty again");

        let w = window(BreakerMode::Rate {
            failure_rate: 0.5,
            window: WindowConfig::Time(Duration::from_secs(10)),
            min_calls: 2,
        });
        assert!(
            !w.success_changes_nothing(),
            "a time window records every call"
        );
        w.clear();
        assert!(!w.success_changes_nothing());
    }

    #[test]
    fn count_window_slides() {
        let (w, st) = (
            CountWindow::new(4, rule(4, 0.5, 1.0)),
            AtomicU64::new(NOT_FULL),
        );
        assert_eq!(w.record(&st, F), None);
        assert_eq!(w.record(&st, S), None);
        assert_eq!(w.record(&st, S), None);
        assert_ne!(st.load(Relaxed), 0, "not full: a success is recorded");
        assert_eq!(w.record(&st, S), None); // 1/4
        assert_eq!(w.record(&st, S), None); // the failure slid out: 0/4
        assert_eq!(st.load(Relaxed), 0, "full of successes: the word is zero");
        assert_eq!(w.rates(&st), Some((0.0, 0.0)));
        assert_eq!(w.record(&st, F), None); // 1/4
        assert_ne!(st.load(Relaxed), 0);
        assert_eq!(w.record(&st, F), Some(Trip::FailureRate)); // 2/4
    }

    #[test]
    fn the_stats_word_counts_the_failures_the_slots_hold() {
        let (w, st) = (
            CountWindow::new(3, rule(3, 0.9, 1.0)),
            AtomicU64::new(NOT_FULL),
        );
        for o in [F, S, S, S, F, S, S, F, F, S, S, S, S] {
            let _ = w.record(&st, o);
            let failures = w
                .slots
                .iter()
                .filter(|s| s.load(Relaxed) & FAILURE != 0)
                .count() as u64;
            assert_eq!(st.load(Relaxed) & FIELD, failures);
        }
        assert_eq!(st.load(Relaxed), 0, "full of successes again");
    }

    #[test]
    fn count_window_slow_rate() {
        let (w, st) = (
            CountWindow::new(2, rule(2, 1.0, 0.5)),
            AtomicU64::new(NOT_FULL),
        );
        assert_eq!(w.record(&st, S), None);
        assert_eq!(w.record(&st, SLOW_OK), Some(Trip::SlowCallRate));
    }

    fn rate_window(n: u32, slow_call: bool, min_calls: u32, rate: f64, slow_rate: f64) -> Window {
        Window::new(&BreakerConfig {
            mode: BreakerMode::Rate {
                failure_rate: rate,
                window: WindowConfig::Calls(n),
                min_calls,
            },
            slow_call: slow_call.then_some(Duration::from_secs(1)),
            slow_call_rate: slow_rate,
            cooldown: Duration::from_secs(1),
            cooldown_max: None,
            half_open_calls: 1,
            success_threshold: 1,
        })
    }

    fn is_packed(w: &Window) -> bool {
        matches!(*w.kind, Kind::Packed(_))
    }

    #[test]
    fn a_count_window_is_packed_exactly_when_it_fits_in_the_word() {
        assert!(is_packed(&rate_window(1, true, 1, 0.5, 1.0)));
        assert!(is_packed(&rate_window(PACKED_MAX_SLOW, true, 1, 0.5, 1.0)));
        assert!(!is_packed(&rate_window(
            PACKED_MAX_SLOW + 1,
            true,
            1,
            0.5,
            1.0
        )));
        // Without `slow_call` no outcome is slow: only the failures need bits.
        assert!(is_packed(&rate_window(
            PACKED_MAX_SLOW + 1,
            false,
            1,
            0.5,
            1.0
        )));
        assert!(is_packed(&rate_window(PACKED_MAX, false, 1, 0.5, 1.0)));
        assert!(!is_packed(&rate_window(PACKED_MAX + 1, false, 1, 0.5, 1.0)));
        assert!(!is_packed(&rate_window(1000, false, 1, 0.5, 1.0)));
    }

    #[test]
    fn the_full_window_thresholds_say_what_decide_says() {
        for n in 1..=PACKED_MAX {
            for min_calls in [1, n / 2 + 1, n, n + 1] {
                for twentieths in 1..=20 {
                    let rate = f64::from(twentieths) / 20.0;
                    let w = PackedWindow::new(n, false, rule(min_calls, rate, 1.0)).unwrap();
                    let calls = u64::from(n);
                    for k in 0..=calls {
                        let by_threshold = k > 0 && k >= u64::from(w.full_failures);
                        let by_rule = rule(min_calls, rate, 1.0).decide(calls, k, 0).is_some();
                        assert_eq!(
                            by_threshold, by_rule,
                            "n {n} min {min_calls} rate {rate} failures {k}"
                        );
                    }
                    let w =
                        PackedWindow::new(n.min(PACKED_MAX_SLOW), true, rule(min_calls, 1.0, rate))
                            .unwrap();
                    let calls = u64::from(w.n);
                    for k in 0..=calls {
                        let by_threshold = k > 0 && k >= u64::from(w.full_slow);
                        let by_rule = rule(min_calls, 1.0, rate).decide(calls, 0, k).is_some();
                        assert_eq!(by_threshold, by_rule, "n {} slow rate {rate} slow {k}", w.n);
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// The packed window and the ring, given the same settings and outcomes,
        /// decide the same after every outcome, report the same rates and hold the
        /// same outcomes, and their words are zero at the same times.
        #[test]
        fn a_packed_window_behaves_as_the_ring(
            n in 1u32..=PACKED_MAX,
            slow_call in proptest::bool::ANY,
            min_frac in 0.0f64..=1.0,
            rate in 1u32..=20,
            slow_rate in 1u32..=20,
            outcomes in proptest::collection::vec((proptest::bool::ANY, proptest::bool::weighted(0.2)), 0..150),
        ) {
            let slow_call = slow_call || n <= PACKED_MAX_SLOW;
            let n = if slow_call { n.min(PACKED_MAX_SLOW) } else { n };
            let min_calls = ((f64::from(n) * min_frac) as u32).max(1);
            let (rate, slow_rate) = (f64::from(rate) / 20.0, f64::from(slow_rate) / 20.0);
            let packed = rate_window(n, slow_call, min_calls, rate, slow_rate);
            proptest::prop_assert!(is_packed(&packed));
            let (ring, stats) = (CountWindow::new(n, rule(min_calls, rate, slow_rate)), AtomicU64::new(NOT_FULL));
            for (i, &(failure, slow)) in outcomes.iter().enumerate() {
                let o = Outcome { failure, slow: slow && slow_call };
                proptest::prop_assert_eq!(packed.record(o), ring.record(&stats, o), "outcome {}", i);
                proptest::prop_assert_eq!(packed.rates(), ring.rates(&stats), "outcome {}", i);
                proptest::prop_assert_eq!(packed.success_changes_nothing(), stats.load(Relaxed) == 0, "outcome {}", i);
                proptest::prop_assert_eq!(packed.snapshot(), WindowSnapshot::Count { outcomes: ring.outcomes() }, "outcome {}", i);
            }
        }

        /// A count window's snapshot restored into a packed window keeps its
        /// newest outcomes, as the ring does.
        #[test]
        fn a_packed_window_restores_what_the_ring_restores(
            n in 1u32..=PACKED_MAX_SLOW,
            outcomes in proptest::collection::vec(0u8..4, 0..80),
        ) {
            let packed = rate_window(n, true, 1, 0.5, 0.5);
            let (ring, stats) = (CountWindow::new(n, rule(1, 0.5, 0.5)), AtomicU64::new(NOT_FULL));
            let snap = WindowSnapshot::Count { outcomes };
            packed.restore(&snap);
            if let WindowSnapshot::Count { outcomes } = &snap {
                ring.restore(&stats, outcomes);
            }
            proptest::prop_assert_eq!(packed.snapshot(), WindowSnapshot::Count { outcomes: ring.outcomes() });
            proptest::prop_assert_eq!(packed.rates(), ring.rates(&stats));
            proptest::prop_assert_eq!(packed.success_changes_nothing(), stats.load(Relaxed) == 0);
        }
    }

    #[test]
    fn time_window_ages_out() {
        let w = TimeWindow::new(Duration::from_secs(10), rule(2, 0.5, 1.0));
        let s = 1_000_000_000u64;
        let base = 1u64 << 62;
        assert_eq!(w.record(F, base), None); // 1 call, below min_calls
                                             // 11 s later the first failure is gone.
        assert_eq!(w.record(F, base + 11 * s), None);
        assert_eq!(w.rates(base + 11 * s), None);
        assert_eq!(w.record(S, base + 12 * s), Some(Trip::FailureRate)); // 1/2
    }
}

#[cfg(all(test, resilience_loom))]
mod loom_model {
    use super::tests::{rule, F, S};
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Three threads record S, F, S into an empty packed window of three: one
    /// compare-and-swap each, so whatever the order none is lost. A load and a
    /// store in its place lose one (the window then holds two outcomes).
    #[test]
    fn loom_a_packed_window_loses_no_outcome_under_contention() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            let w = Arc::new(PackedWindow::new(3, true, rule(4, 1.0, 1.0)).unwrap());
            let word = Arc::new(AtomicU64::new(w.empty()));
            let hs: Vec<_> = [S, F, S]
                .into_iter()
                .map(|o| {
                    let (w, word) = (w.clone(), word.clone());
                    thread::spawn(move || {
                        let _ = w.record(&word, o);
                    })
                })
                .collect();
            hs.into_iter().for_each(|h| h.join().unwrap());
            assert_eq!(w.counts(word.load(Relaxed)), (3, 1, 0));
        });
    }

    /// Three threads record into one slot (a window of one, filled with a
    /// success): whichever swap lands last, the stats word counts the failure
    /// the slot holds, and nothing else, and the window is full.
    #[test]
    fn loom_the_stats_word_counts_the_slots_under_contention() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            // min_calls above the window's length: no decision, so no trip, to
            // look at the counts alone.
            let w = Arc::new((
                CountWindow::new(1, rule(2, 1.0, 1.0)),
                AtomicU64::new(NOT_FULL),
            ));
            let _ = w.0.record(&w.1, S);
            let hs: Vec<_> = [S, F, S]
                .into_iter()
                .map(|o| {
                    let w = w.clone();
                    thread::spawn(move || {
                        let _ = w.0.record(&w.1, o);
                    })
                })
                .collect();
            hs.into_iter().for_each(|h| h.join().unwrap());
            let failures = u64::from(w.0.slots[0].load(Relaxed) & FAILURE != 0);
            assert_eq!(w.1.load(Relaxed) & FIELD, failures);
            assert_eq!(w.1.load(Relaxed) & NOT_FULL, 0);
        });
    }
}
