//! The rate limiter: GCRA (the generic cell rate algorithm) on one atomic word.
//!
//! With emission interval `T = per / permits` and tolerance `tau = (burst - 1) * T`,
//! the limiter keeps the theoretical arrival time `tat` of the next permit. A call at
//! `now` conforms when `max(tat, now) - tau <= now`; it then moves `tat` on by `T`.
//! In any interval of length `t` at most `t / T + burst` permits are granted.
//! A call that would have to wait `w <= max_wait` reserves its permit and waits; a
//! permit not used (the call is dropped before its body starts, or the bulkhead
//! refuses it) is given back, if no later permit was handed out meanwhile (giving
//! back one from the middle of the schedule would let the next call share a later
//! caller's slot and exceed the rate).

use std::sync::atomic::Ordering::Relaxed;

use crate::sync::AtomicU64;
use std::time::Duration;

use crate::clock::{self, Nanos};
use crate::config::RateLimitConfig;

pub(crate) struct RateLimiter {
    tat: AtomicU64,
    /// The three below change in place with live configuration; `tat` is kept, so
    /// permits already granted still count against the new rate.
    interval: AtomicU64,
    tolerance: AtomicU64,
    max_wait: AtomicU64,
}

/// The permit would come later than `max_wait`; `retry_after` is when it would come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limited {
    pub retry_after: Duration,
}

/// A granted permit: now, or after waiting `wait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grant {
    Now,
    After(Duration),
}

impl RateLimiter {
    pub(crate) fn new(config: RateLimitConfig) -> Self {
        let (interval, tolerance, max_wait) = Self::params(&config);
        Self {
            tat: AtomicU64::new(0),
            interval: AtomicU64::new(interval),
            tolerance: AtomicU64::new(tolerance),
            max_wait: AtomicU64::new(max_wait),
        }
    }

    fn params(config: &RateLimitConfig) -> (u64, u64, u64) {
        let per = clock::dur_nanos(config.rate.per);
        let interval = per.div_ceil(u64::from(config.rate.permits.max(1))).max(1);
        (
            interval,
            interval.saturating_mul(u64::from(config.burst.max(1) - 1)),
            clock::dur_nanos(config.max_wait),
        )
    }

    /// New rate, burst and wait, for the next permit.
    pub(crate) fn reconfigure(&self, config: RateLimitConfig) {
        let (interval, tolerance, max_wait) = Self::params(&config);
        self.interval.store(interval, Relaxed);
        self.tolerance.store(tolerance, Relaxed);
        self.max_wait.store(max_wait, Relaxed);
    }

    /// Takes a permit at `now`, or reserves one up to `max_wait` ahead.
    #[cfg(test)]
    pub(crate) fn acquire_at(&self, now: Nanos) -> Result<Grant, Limited> {
        self.reserve_at(now).map(|(grant, _)| grant)
    }

    /// Takes a permit at `now` as `acquire_at` (a test helper) does, also returning
    /// the `tat` the permit found and the one it left behind (what
    /// [`RateLimiter::refund`] needs).
    #[inline]
    fn reserve_at(&self, now: Nanos) -> Result<(Grant, Taken), Limited> {
        let mut tat = self.tat.load(Relaxed);
        let (interval, tolerance) = (self.interval.load(Relaxed), self.tolerance.load(Relaxed));
        loop {
            let start = tat.max(now);
            let earliest = start.saturating_sub(tolerance);
            let wait = earliest.saturating_sub(now);
            if wait > self.max_wait.load(Relaxed) {
                return Err(Limited {
                    retry_after: Duration::from_nanos(wait),
                });
            }
            // Saturates for a period of centuries: such a limiter grants one permit.
            let end = start.saturating_add(interval);
            let taken = Taken { start, end };
            match self.tat.compare_exchange_weak(tat, end, Relaxed, Relaxed) {
                Ok(_) if wait == 0 => return Ok((Grant::Now, taken)),
                Ok(_) => return Ok((Grant::After(Duration::from_nanos(wait)), taken)),
                Err(cur) => tat = cur,
            }
        }
    }

    /// A permit now or a reservation; given back when dropped unless used.
    /// Takes a permit due now, if there is one (the lane): `false` changes nothing,
    /// and the call then goes through [`RateLimiter::acquire`] (a wait or a refusal).
    #[inline]
    pub(crate) fn take_now(&self) -> bool {
        self.take_now_at(clock::now_nanos())
    }

    #[inline]
    fn take_now_at(&self, now: Nanos) -> bool {
        let mut tat = self.tat.load(Relaxed);
        let (interval, tolerance) = (self.interval.load(Relaxed), self.tolerance.load(Relaxed));
        loop {
            let start = tat.max(now);
            // `start - now` is the wait (`start >= now`); due now within the burst.
            if start - now > tolerance {
                return false;
            }
            let end = start.saturating_add(interval);
            match self.tat.compare_exchange_weak(tat, end, Relaxed, Relaxed) {
                Ok(_) => return true,
                Err(cur) => tat = cur,
            }
        }
    }

    #[inline]
    pub(crate) fn acquire(&self) -> Result<Reservation<'_>, Limited> {
        let (grant, taken) = self.reserve_at(clock::now_nanos())?;
        Ok(Reservation {
            limiter: self,
            grant,
            taken,
        })
    }

    /// Gives back a permit, if it is still the last one handed out. Otherwise it
    /// stays taken: later callers' slots are fixed already.
    pub(crate) fn refund(&self, taken: Taken) {
        let _ = self
            .tat
            .compare_exchange(taken.end, taken.start, Relaxed, Relaxed);
    }
}

/// The `tat` a permit found (its slot's start) and left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Taken {
    start: Nanos,
    end: Nanos,
}

/// A permit taken but not used yet: given back when dropped, unless
/// [`Reservation::used`] said the body started.
#[must_use]
pub(crate) struct Reservation<'a> {
    limiter: &'a RateLimiter,
    grant: Grant,
    taken: Taken,
}

impl Reservation<'_> {
    /// How long the permit makes the call wait, if it does.
    pub(crate) fn delay(&self) -> Option<Duration> {
        match self.grant {
            Grant::Now => None,
            Grant::After(d) => Some(d),
        }
    }

    /// Waits until the permit is due, for a sync call: sleeps the thread (async
    /// calls sleep [`Reservation::delay`] on tokio's timer).
    pub(crate) fn wait_sync(&self) {
        if let Grant::After(d) = self.grant {
            clock::sleep_thread(d);
        }
    }

    /// The body starts: the permit is spent.
    #[inline]
    pub(crate) fn used(self) {
        std::mem::forget(self);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.limiter.refund(self.taken);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rate;

    fn limiter(permits: u32, burst: u32, max_wait: Duration) -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            rate: Rate::new(permits, Duration::from_secs(1)),
            burst,
            max_wait,
        })
    }

    #[test]
    fn take_now_grants_what_acquire_grants_now_and_a_refusal_changes_nothing() {
        let (a, b) = (
            limiter(10, 3, Duration::ZERO),
            limiter(10, 3, Duration::ZERO),
        );
        let t0 = 1u64 << 62;
        for _ in 0..3 {
            assert!(a.take_now_at(t0));
            assert_eq!(b.acquire_at(t0), Ok(Grant::Now));
        }
        // The burst is spent: refused, and the refusal takes nothing.
        assert!(!a.take_now_at(t0));
        assert!(!a.take_now_at(t0 + 99_999_999));
        assert_eq!(a.tat.load(Relaxed), b.tat.load(Relaxed));
        assert_eq!(
            a.acquire_at(t0).unwrap_err().retry_after,
            Duration::from_millis(100)
        );
        // One interval later, one permit again.
        assert!(a.take_now_at(t0 + 100_000_000));
        assert!(!a.take_now_at(t0 + 100_000_000));
    }

    #[test]
    fn take_now_never_takes_a_permit_that_would_be_waited_for() {
        // A limiter that would grant a wait: `take_now` refuses instead, and leaves
        // the permit to the caller that waits for it.
        let l = limiter(10, 1, Duration::from_millis(500));
        let t0 = 1u64 << 62;
        assert!(l.take_now_at(t0));
        assert!(!l.take_now_at(t0));
        assert_eq!(
            l.acquire_at(t0),
            Ok(Grant::After(Duration::from_millis(100)))
        );
    }

    #[test]
    fn burst_then_steady_rate() {
        let l = limiter(10, 3, Duration::ZERO);
        let t0 = 1u64 << 62;
        for _ in 0..3 {
            assert_eq!(l.acquire_at(t0), Ok(Grant::Now));
        }
        let e = l.acquire_at(t0).unwrap_err();
        assert_eq!(e.retry_after, Duration::from_millis(100));
        assert_eq!(l.acquire_at(t0 + 100_000_000), Ok(Grant::Now));
        assert!(l.acquire_at(t0 + 100_000_000).is_err());
    }

    #[test]
    fn waits_within_max_wait_and_refunds() {
        let l = limiter(10, 1, Duration::from_millis(150));
        let t0 = 1u64 << 62;
        assert_eq!(l.acquire_at(t0), Ok(Grant::Now));
        assert_eq!(
            l.acquire_at(t0),
            Ok(Grant::After(Duration::from_millis(100)))
        );
        assert_eq!(
            l.acquire_at(t0).unwrap_err().retry_after,
            Duration::from_millis(200)
        );
        l.refund(Taken {
            start: t0 + 100_000_000,
            end: t0 + 200_000_000,
        });
        assert_eq!(
            l.acquire_at(t0),
            Ok(Grant::After(Duration::from_millis(100)))
        );
    }

    #[test]
    fn only_the_last_permit_handed_out_is_given_back() {
        let l = limiter(10, 1, Duration::from_millis(500));
        let t0 = 1u64 << 62;
        assert_eq!(l.acquire_at(t0), Ok(Grant::Now));
        // A reserves the slot of t0+100ms, B the one of t0+200ms; A gives up.
        let (a, a_taken) = l.reserve_at(t0).unwrap();
        assert_eq!(a, Grant::After(Duration::from_millis(100)));
        let (b, _) = l.reserve_at(t0).unwrap();
        assert_eq!(b, Grant::After(Duration::from_millis(200)));
        l.refund(a_taken);
        // A's slot cannot be handed to C without C sharing B's: C comes after B.
        assert_eq!(
            l.acquire_at(t0),
            Ok(Grant::After(Duration::from_millis(300)))
        );
    }
}
