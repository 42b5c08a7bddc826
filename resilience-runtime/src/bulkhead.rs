//! The bulkhead: at most `max_concurrent` calls inside at once.
//!
//! Acquiring is a compare-and-swap on the count of slots ever taken, under the
//! limit of those given back plus `max_concurrent`. Giving a slot back is counted
//! on a cache line the thread owns (a plain load and store, like the service's
//! counters), then, only when someone waits, a wake-up. A locked subtraction on
//! the shared count cost as much as the acquire (each locked instruction drains
//! the store buffer): the give-back is now a plain store. An acquire reads the
//! count of slots given back from a copy, `seen`, and sums the threads' lines
//! only when the copy says the bulkhead is full, so a call far from the limit
//! reads one line of the bulkhead's; a bulkhead at its limit sums the lines (of
//! the threads that ever counted, two per CPU at most, see `counters`) on each
//! try. Threads without a line, the bulkheads of computed keys (there may be very
//! many) and bulkheads of fewer than [`LINES_FROM`] slots (whose copy would be
//! behind on most tries) count their give-backs with an atomic add on a shared
//! count, as every bulkhead did before.
//!
//! Every count is of the past, so a try may miss a slot given back an instant
//! before and never over-admits: a give-back is counted after its slot was
//! taken, and the sum a try uses was read before its compare-and-swap.
//!
//! A waiter counts itself, then looks for a slot; a give-back stores, then looks
//! for waiters. So that one of the two always sees the other without a full
//! fence on every give-back, the waiter's side runs the process-wide fence of
//! `asym` (see there), once per stretch of waiting (see `Waiting::new`).
//! Waiting is bounded by `max_wait`, async (a `Notify`) or sync (a `Condvar`).
//! A permit is given back when dropped, so a cancelled or panicking call never
//! keeps its slot.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio::time::Sleep;

use crate::config::BulkheadConfig;
use crate::counters::{owned_lines, LINE};
use crate::sync::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Condvar, Mutex};

/// A thread's count of slots given back, alone on its cache lines (the size of
/// the counters' lines, so a thread's line is at the same byte offset).
#[repr(align(128))]
#[derive(Debug)]
struct Given(AtomicU64);

#[cfg(not(resilience_loom))]
const _: () = assert!(std::mem::size_of::<Given>() == LINE);

/// A bulkhead of fewer slots gives them back on the shared count. A try sums
/// the threads' lines when the copy it reads says the bulkhead is full, which the
/// copy, behind by the slots given back since the last sum, says about once in
/// `max_concurrent` tries: with two slots and two threads, every other try read
/// the line the other thread had just written (two threads on a bulkhead of 2:
/// 83-104 ns a call on lines against 54-64 with the locked subtraction; on one
/// of 1,000 slots, 34-39 against 54-56).
#[cfg(not(resilience_loom))]
const LINES_FROM: u32 = 16;
/// The models run bulkheads of one slot on lines.
#[cfg(resilience_loom)]
const LINES_FROM: u32 = 1;

// `repr(C)`: everything an acquire and a give-back read, on one line.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Bulkhead {
    /// Slots ever taken.
    taken: AtomicU64,
    /// A sum of the threads' lines that some try read: never above the true
    /// sum (and so never above what a try then sees taken).
    seen: AtomicU64,
    /// Slots given back by threads without a line of theirs, and by every
    /// thread while the bulkhead has fewer than [`LINES_FROM`] slots.
    given_shared: AtomicU64,
    /// Changed in place by live configuration; calls inside keep their slots.
    max: AtomicU32,
    /// Calls waiting for a slot, in units of [`WAITER`], and [`FENCED`].
    waiters: AtomicU32,
    /// The bytes of `given` (a thread's line offset, see `counters`, is below
    /// it), or 0 while the bulkhead has fewer than [`LINES_FROM`] slots.
    lines_bytes: AtomicUsize,
    /// `lines_bytes` has been above 0: a give-back may have been on a line, so
    /// a waiter fences (see [`Waiting::new`]). Never cleared: a give-back may
    /// have read `lines_bytes` before a resize set it to 0. Read and set only
    /// by read-modify-writes, which order them.
    ever_lines: AtomicBool,
    /// Line 0 is not used (as in `counters`), lines 1.. belong to threads.
    given: Box<[Given]>,
    max_wait_ns: AtomicU64,
    notify: Notify,
    sync_lock: Mutex<()>,
    sync_cv: Condvar,
}

/// A slot in the bulkhead, given back on drop.
#[derive(Debug)]
#[must_use]
pub(crate) struct Permit<'a> {
    bulkhead: &'a Bulkhead,
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.bulkhead.give_back() {
            self.bulkhead.wake();
        }
    }
}

impl<'a> Permit<'a> {
    /// Gives the slot back without waking a waiter: returns the bulkhead if one
    /// waits, for the caller to [`Bulkhead::wake`] (off its fast path).
    #[inline(always)]
    pub(crate) fn release_quiet(self) -> Option<&'a Bulkhead> {
        let b = self.bulkhead;
        std::mem::forget(self);
        b.give_back().then_some(b)
    }
}

/// No slot came free within `max_wait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Full;

impl Bulkhead {
    /// `owned`: count give-backs on the threads' own lines (fixed-name services);
    /// without, on the shared count (computed keys: nothing apart, as their
    /// counters).
    pub(crate) fn new(config: BulkheadConfig, owned: bool) -> Self {
        crate::asym::init();
        let given: Box<[Given]> = if owned {
            (0..=owned_lines())
                .map(|_| Given(AtomicU64::new(0)))
                .collect()
        } else {
            Box::new([])
        };
        let bytes = lines_bytes(given.len(), config.max_concurrent);
        Self {
            taken: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            max: AtomicU32::new(config.max_concurrent),
            waiters: AtomicU32::new(0),
            lines_bytes: AtomicUsize::new(bytes),
            ever_lines: AtomicBool::new(bytes != 0),
            given_shared: AtomicU64::new(0),
            given,
            max_wait_ns: AtomicU64::new(nanos(config.max_wait)),
            notify: Notify::new(),
            sync_lock: Mutex::new(()),
            sync_cv: Condvar::new(),
        }
    }

    /// Slots given back, summed over the threads' lines and the shared count.
    /// Acquire: every give-back it counts is of a slot whose taking the reader
    /// then sees in `taken`.
    fn given_back(&self) -> u64 {
        self.lines_sum()
            .wrapping_add(self.given_shared.load(Acquire))
    }

    /// Slots given back on the threads' lines (Acquire, as [`Self::given_back`]).
    fn lines_sum(&self) -> u64 {
        // Lines no thread has claimed yet hold nothing: on a machine of many
        // CPUs with few threads calling, a bulkhead at its limit, which sums on
        // each try, reads a few lines rather than all.
        #[cfg(not(resilience_loom))]
        let used = crate::counters::lines_in_use() + 1;
        #[cfg(resilience_loom)]
        let used = self.given.len();
        self.given
            .iter()
            .take(used)
            .skip(1)
            .map(|g| g.0.load(Acquire))
            .fold(0, u64::wrapping_add)
    }

    /// Slots taken and not given back (a moment's view).
    fn inside(&self) -> u64 {
        // Given back first: those it counts were taken before `taken` is read.
        let given = self.given_back();
        self.taken.load(Acquire).saturating_sub(given)
    }

    /// Slots free now.
    pub(crate) fn available(&self) -> u32 {
        let max = u64::from(self.max.load(Relaxed));
        u32::try_from(max.saturating_sub(self.inside())).unwrap_or(u32::MAX)
    }

    fn max_wait(&self) -> Duration {
        Duration::from_nanos(self.max_wait_ns.load(Relaxed))
    }

    /// New limits, taking effect for the next acquire. Calls inside keep their
    /// slots: after a shrink, new calls wait until enough of them have left.
    pub(crate) fn reconfigure(&self, config: BulkheadConfig) {
        let old = self.max.swap(config.max_concurrent, SeqCst);
        // Give-backs already on the lines stay counted there; the tries sum them.
        // `ever_lines` first, by a read-modify-write (see `Waiting::new`).
        let bytes = lines_bytes(self.given.len(), config.max_concurrent);
        if bytes != 0 {
            self.ever_lines.swap(true, SeqCst);
        }
        self.lines_bytes.store(bytes, Release);
        self.max_wait_ns.store(nanos(config.max_wait), Relaxed);
        if config.max_concurrent > old {
            self.wake();
        }
    }

    #[inline]
    pub(crate) fn try_acquire(&self) -> Option<Permit<'_>> {
        // The give-backs before `taken` (Acquire): those they count are of slots
        // the compare-and-swap below sees taken.
        let mut given = self
            .seen
            .load(Acquire)
            .wrapping_add(self.given_shared.load(Acquire));
        let mut taken = self.taken.load(Relaxed);
        let max = u64::from(self.max.load(Relaxed));
        loop {
            if taken.wrapping_sub(given) >= max {
                given = self.refresh(given)?;
                taken = self.taken.load(Relaxed);
                continue;
            }
            match self
                .taken
                .compare_exchange_weak(taken, taken + 1, SeqCst, Relaxed)
            {
                Ok(_) => return Some(Permit { bulkhead: self }),
                Err(now) => taken = now,
            }
        }
    }

    /// The copy of slots given back says the bulkhead is full: the sum of the
    /// lines and the shared count instead, if more came back than `given` (the
    /// lines' sum kept in `seen` for the next tries); `None` if none did.
    #[cold]
    #[inline(never)]
    fn refresh(&self, given: u64) -> Option<u64> {
        let lines = self.lines_sum();
        let now = lines.wrapping_add(self.given_shared.load(Acquire));
        if now == given {
            return None;
        }
        // A store, not a maximum (a locked instruction): a racing try may put
        // back an older sum, which only makes the next tries sum again.
        self.seen.store(lines, Release);
        Some(now)
    }

    /// Counts a slot given back; true if someone waits (see `asym`).
    #[inline(always)]
    fn give_back(&self) -> bool {
        let off = line_offset();
        // Acquire: a give-back on a line follows `ever_lines` set.
        if off < self.lines_bytes.load(Acquire) {
            // SAFETY: `off` is a nonzero multiple of `LINE` (a line the counters
            // gave this thread), below the bytes of `given`, whose elements are
            // `LINE` bytes each: the offset of the thread's own line.
            #[cfg(not(resilience_loom))]
            let g = unsafe { &*self.given.as_ptr().byte_add(off) };
            #[cfg(resilience_loom)]
            let g = &self.given[off / LINE];
            // This thread alone writes its line. Release: a try that reads the
            // count sees the slot's taking.
            g.0.store(g.0.load(Relaxed).wrapping_add(1), Release);
            crate::asym::light();
            self.waiters.load(Relaxed) >= WAITER
        } else {
            self.given_shared.fetch_add(1, SeqCst);
            self.waiters.load(Acquire) >= WAITER
        }
    }

    #[cold]
    pub(crate) fn wake(&self) {
        self.notify.notify_waiters();
        let _g = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.sync_cv.notify_all();
    }

    /// A waiter's first round, for the loom model: counts itself, tries once
    /// (the permit, if any, given back at once), and stays counted, as a waiter
    /// that found no slot and sleeps.
    #[cfg(all(test, resilience_loom))]
    pub(crate) fn wait_then_try(&self) -> bool {
        let waiting = Waiting::new(self);
        let got = self.try_acquire().is_some();
        std::mem::forget(waiting);
        got
    }

    /// Calls waiting for a slot now.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> u32 {
        self.waiters.load(SeqCst) / WAITER
    }

    /// Whether a full bulkhead makes calls wait (`max_wait` above zero).
    pub(crate) fn waits(&self) -> bool {
        self.max_wait_ns.load(Relaxed) != 0
    }

    /// Waits up to `max_wait` for a slot (after [`Bulkhead::try_acquire`] found none).
    pub(crate) fn acquire_slow(&self) -> AcquireSlow<'_> {
        AcquireSlow {
            bulkhead: self,
            _waiting: Waiting::new(self),
            // `sleep` (not `now + max_wait`): a `max_wait` of centuries must not
            // overflow.
            sleep: tokio::time::sleep(self.max_wait()),
            notified: self.notify.notified(),
            enabled: false,
        }
    }

    /// A slot for a sync call, blocking the thread up to `max_wait`.
    pub(crate) fn acquire_sync(&self) -> Result<Permit<'_>, Full> {
        if let Some(p) = self.try_acquire() {
            return Ok(p);
        }
        let max_wait = self.max_wait();
        if max_wait.is_zero() {
            return Err(Full);
        }
        // No deadline when `max_wait` is too long to add to an instant: wait on.
        let deadline = std::time::Instant::now().checked_add(max_wait);
        let _waiting = Waiting::new(self);
        let mut guard = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(p) = self.try_acquire() {
                return Ok(p);
            }
            let now = std::time::Instant::now();
            guard = match deadline {
                Some(deadline) if now >= deadline => return Err(Full),
                Some(deadline) => {
                    self.sync_cv
                        .wait_timeout(guard, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.sync_cv.wait(guard).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pin_project_lite::pin_project! {
    /// An async call's wait for a slot of a full bulkhead, up to its `max_wait`
    /// ([`Bulkhead::acquire_slow`]). A type of its own (not an `async fn`'s) so
    /// that a call's state can hold it by value, in its pool block: the wait
    /// allocates nothing.
    ///
    /// Each round arms a wake-up (`notified`) before it tries for a slot, so a
    /// slot given back between the try and the wait is not missed; a wake-up is
    /// seen before the deadline when both are ready.
    #[must_use = "futures do nothing unless polled"]
    pub(crate) struct AcquireSlow<'a> {
        bulkhead: &'a Bulkhead,
        _waiting: Waiting<'a>,
        #[pin]
        sleep: Sleep,
        #[pin]
        notified: Notified<'a>,
        // `notified` is armed and the slot tried since it was made.
        enabled: bool,
    }
}

impl std::fmt::Debug for AcquireSlow<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcquireSlow").finish_non_exhaustive()
    }
}

impl<'a> Future for AcquireSlow<'a> {
    type Output = Result<Permit<'a>, Full>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let b: &'a Bulkhead = this.bulkhead;
        loop {
            if !*this.enabled {
                this.notified.as_mut().enable();
                *this.enabled = true;
                if let Some(p) = b.try_acquire() {
                    return Poll::Ready(Ok(p));
                }
            }
            if this.notified.as_mut().poll(cx).is_ready() {
                // Woken: a slot was given back (or the limit raised). Try again
                // under a fresh wake-up.
                this.notified.set(b.notify.notified());
                *this.enabled = false;
                continue;
            }
            if this.sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(b.try_acquire().ok_or(Full));
            }
            return Poll::Pending;
        }
    }
}

/// One waiter in [`Bulkhead::waiters`].
const WAITER: u32 = 2;
/// [`Bulkhead::waiters`]: a waiter has run the process-wide fence since the count
/// was last zero, so every give-back since sees the count above zero.
const FENCED: u32 = 1;

/// Counts a waiter for as long as it lives (also when its future is dropped).
#[derive(Debug)]
struct Waiting<'a>(&'a Bulkhead);

impl<'a> Waiting<'a> {
    /// Counts the waiter, then makes sure that a slot given back after this
    /// sees the waiter (and wakes it) and one given back before is seen by the
    /// waiter's next try:
    /// - a give-back on the shared count is an add, then a load of the
    ///   waiters. The waiter reads the shared count with a read-modify-write:
    ///   if that comes before the give-back's add, the add reads from it, and so
    ///   the give-back's load sees the waiter counted; if after, the waiter's
    ///   next try sees the add;
    /// - a give-back on a line (only in a bulkhead that has had lines, which
    ///   the waiter also reads with a read-modify-write, ordered before a
    ///   resize's setting of it) is met by the heavy side of `asym`'s fence,
    ///   unless one ran since the count was last zero ([`FENCED`]): every
    ///   give-back after that one's fence sees the count above zero, and the
    ///   count has stayed so. Where the heavy side is a plain full fence, every
    ///   waiter runs it.
    fn new(b: &'a Bulkhead) -> Self {
        let before = b.waiters.fetch_add(WAITER, SeqCst);
        b.given_shared.fetch_add(0, SeqCst);
        if b.ever_lines.fetch_or(false, SeqCst) {
            if !crate::asym::heavy_is_process_wide() {
                crate::asym::heavy();
            } else if before & FENCED == 0 {
                crate::asym::heavy();
                b.waiters.fetch_or(FENCED, SeqCst);
            }
        }
        Self(b)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        // The last waiter out clears `FENCED`: the next one fences again.
        let _ = self.0.waiters.fetch_update(SeqCst, SeqCst, |w| {
            Some(if w / WAITER == 1 { 0 } else { w - WAITER })
        });
    }
}

/// The bytes of `lines` lines for a bulkhead of `max` slots (see [`LINES_FROM`]).
fn lines_bytes(lines: usize, max: u32) -> usize {
    if max >= LINES_FROM {
        lines * LINE
    } else {
        0
    }
}

/// The byte offset of this thread's line (see `counters`), without claiming one:
/// a thread claims its line on its first count, and gives back on the shared
/// count until then. (A claim here is a call, and its registers a stack frame
/// for the lanes that need none.)
#[cfg(not(resilience_loom))]
#[inline(always)]
fn line_offset() -> usize {
    crate::counters::thread_slot()
}

#[cfg(resilience_loom)]
loom::thread_local! {
    /// A model thread's line: loom runs its threads on one of the system's, so
    /// the counters' thread-local line would be shared. Set by the model.
    pub(crate) static LOOM_LINE: std::cell::Cell<usize> = std::cell::Cell::new(usize::MAX);
}

#[cfg(resilience_loom)]
fn line_offset() -> usize {
    LOOM_LINE.with(std::cell::Cell::get)
}
