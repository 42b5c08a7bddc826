//! The bulkhead: at most `max_concurrent` calls inside at once.
//!
//! Acquiring is a compare-and-swap on one counter; releasing is a subtraction and,
//! only when someone waits, a wake-up. Waiting is bounded by `max_wait`, async (a
//! `Notify`) or sync (a `Condvar`). A permit is given back when dropped, so a
//! cancelled or panicking call never keeps its slot.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio::time::Sleep;

use crate::config::BulkheadConfig;
use crate::sync::{AtomicU32, AtomicU64, Condvar, Mutex};

#[derive(Debug)]
pub(crate) struct Bulkhead {
    in_use: AtomicU32,
    /// Changed in place by live configuration; calls inside keep their slots.
    max: AtomicU32,
    max_wait_ns: AtomicU64,
    waiters: AtomicU32,
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
        self.bulkhead.release();
    }
}

impl<'a> Permit<'a> {
    /// Gives the slot back without waking a waiter: returns the bulkhead if one
    /// waits, for the caller to [`Bulkhead::wake`] (off its fast path).
    #[inline(always)]
    pub(crate) fn release_quiet(self) -> Option<&'a Bulkhead> {
        let b = self.bulkhead;
        std::mem::forget(self);
        b.in_use.fetch_sub(1, SeqCst);
        (b.waiters.load(SeqCst) != 0).then_some(b)
    }
}

/// No slot came free within `max_wait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Full;

impl Bulkhead {
    pub(crate) fn new(config: BulkheadConfig) -> Self {
        Self {
            in_use: AtomicU32::new(0),
            max: AtomicU32::new(config.max_concurrent),
            max_wait_ns: AtomicU64::new(nanos(config.max_wait)),
            waiters: AtomicU32::new(0),
            notify: Notify::new(),
            sync_lock: Mutex::new(()),
            sync_cv: Condvar::new(),
        }
    }

    /// Slots free now.
    pub(crate) fn available(&self) -> u32 {
        self.max
            .load(Relaxed)
            .saturating_sub(self.in_use.load(Relaxed))
    }

    fn max_wait(&self) -> Duration {
        Duration::from_nanos(self.max_wait_ns.load(Relaxed))
    }

    /// New limits, taking effect for the next acquire. Calls inside keep their
    /// slots: after a shrink, new calls wait until enough of them have left.
    pub(crate) fn reconfigure(&self, config: BulkheadConfig) {
        let old = self.max.swap(config.max_concurrent, SeqCst);
        self.max_wait_ns.store(nanos(config.max_wait), Relaxed);
        if config.max_concurrent > old {
            self.wake();
        }
    }

    #[inline]
    pub(crate) fn try_acquire(&self) -> Option<Permit<'_>> {
        let mut cur = self.in_use.load(Relaxed);
        let max = self.max.load(Relaxed);
        while cur < max {
            match self
                .in_use
                .compare_exchange_weak(cur, cur + 1, SeqCst, Relaxed)
            {
                Ok(_) => return Some(Permit { bulkhead: self }),
                Err(now) => cur = now,
            }
        }
        None
    }

    #[inline]
    fn release(&self) {
        self.in_use.fetch_sub(1, SeqCst);
        if self.waiters.load(SeqCst) != 0 {
            self.wake();
        }
    }

    #[cold]
    pub(crate) fn wake(&self) {
        self.notify.notify_waiters();
        let _g = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.sync_cv.notify_all();
    }

    /// Calls waiting for a slot now.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> u32 {
        self.waiters.load(SeqCst)
    }

    /// Whether a full bulkhead makes calls wait (`max_wait` above zero).
    pub(crate) fn waits(&self) -> bool {
        self.max_wait_ns.load(Relaxed) != 0
    }

    /// Waits up to `max_wait` for a slot (after [`Bulkhead::try_acquire`] found none).
    pub(crate) fn acquire_slow(&self) -> AcquireSlow<'_> {
        AcquireSlow {
            bulkhead: self,
            _waiting: Waiting::new(&self.waiters),
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
        let _waiting = Waiting::new(&self.waiters);
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

/// Counts a waiter for as long as it lives (also when its future is dropped).
#[derive(Debug)]
struct Waiting<'a>(&'a AtomicU32);

impl<'a> Waiting<'a> {
    fn new(c: &'a AtomicU32) -> Self {
        c.fetch_add(1, SeqCst);
        Self(c)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}
