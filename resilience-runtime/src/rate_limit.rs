//! The rate limiter: GCRA (the generic cell rate algorithm) on one atomic word.
//!
//! With emission interval `T = per / permits` and tolerance `tau = (burst - 1) * T`,
//! the limiter keeps the theoretical arrival time `tat` of the next permit. A call at
//! `now` conforms when `max(tat, now) - tau <= now`; it then moves `tat` on by `T`.
//! In any interval of length `t` at most `t / T + burst` permits are granted.
//! A call that would have to wait `w <= max_wait` reserves its permit and waits; the
//! reservation is given back if the call is dropped before the wait ends.

use std::sync::atomic::Ordering::Relaxed;

use crate::sync::AtomicU64;
use std::time::Duration;

use crate::clock::{self, Nanos};
use crate::config::RateLimitConfig;

pub(crate) struct RateLimiter {
    tat: AtomicU64,
    interval: u64,
    tolerance: u64,
    max_wait: u64,
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
        let per = clock::dur_nanos(config.rate.per);
        let interval = per.div_ceil(u64::from(config.rate.permits.max(1))).max(1);
        Self {
            tat: AtomicU64::new(0),
            interval,
            tolerance: interval.saturating_mul(u64::from(config.burst.max(1) - 1)),
            max_wait: clock::dur_nanos(config.max_wait),
        }
    }

    /// Takes a permit at `now`, or reserves one up to `max_wait` ahead.
    #[inline]
    pub(crate) fn acquire_at(&self, now: Nanos) -> Result<Grant, Limited> {
        let mut tat = self.tat.load(Relaxed);
        loop {
            let start = tat.max(now);
            let earliest = start.saturating_sub(self.tolerance);
            let wait = earliest.saturating_sub(now);
            if wait > self.max_wait {
                return Err(Limited {
                    retry_after: Duration::from_nanos(wait),
                });
            }
            match self
                .tat
                .compare_exchange_weak(tat, start + self.interval, Relaxed, Relaxed)
            {
                Ok(_) if wait == 0 => return Ok(Grant::Now),
                Ok(_) => return Ok(Grant::After(Duration::from_nanos(wait))),
                Err(cur) => tat = cur,
            }
        }
    }

    #[inline]
    pub(crate) fn acquire(&self) -> Result<Grant, Limited> {
        self.acquire_at(clock::now_nanos())
    }

    /// Gives back a reserved permit that was not used.
    pub(crate) fn refund(&self) {
        let _ = self
            .tat
            .fetch_update(Relaxed, Relaxed, |t| Some(t.saturating_sub(self.interval)));
    }

    /// Waits a reservation out, giving it back if dropped first.
    pub(crate) async fn wait(&self, grant: Grant) {
        if let Grant::After(d) = grant {
            let guard = Refund(Some(self));
            tokio::time::sleep(d).await;
            std::mem::forget(guard);
        }
    }

    pub(crate) fn wait_sync(&self, grant: Grant) {
        if let Grant::After(d) = grant {
            clock::sleep_thread(d);
        }
    }
}

struct Refund<'a>(Option<&'a RateLimiter>);

impl Drop for Refund<'_> {
    fn drop(&mut self) {
        if let Some(l) = self.0 {
            l.refund();
        }
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
        l.refund();
        assert_eq!(
            l.acquire_at(t0),
            Ok(Grant::After(Duration::from_millis(100)))
        );
    }
}
