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
//!
//! The schedule is kept in nanoseconds on the shared scale (see [`clock`]) until the
//! CPU's counter is the clock source and ticks at least once a nanosecond; the first
//! call after that moves it into the counter's ticks, for good (the source never
//! changes again). A permit then reads the counter as it is and compares it with
//! `tat`: no scaling to nanoseconds, no read of the clock's settings, which were
//! most of what a permit cost beyond the counter read and the compare-and-swap. In
//! ticks `T` is rounded up to a whole tick, so the rate granted is never above the
//! one set, and no further below it than a tick an interval.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::sync::{AtomicU64, Mutex};
use std::time::Duration;

use crate::clock::{self, Nanos};
use crate::config::RateLimitConfig;

/// The top bit of a schedule word: `tat` is in the CPU counter's ticks. Without it,
/// in nanoseconds on the shared scale, which stay below 2^63 (the scale starts at
/// 2^62). The counter's readings are tagged with it too, so the schedule's
/// arithmetic is the same in either unit: a difference of two tagged words loses
/// the tag, a tagged word plus a span keeps it (sums saturate at `u64::MAX`).
const TICKS: u64 = 1 << 63;

/// The schedule moves into ticks only while the counter reads below this, which
/// leaves it decades before a reading could reach the tag bit.
const TICKS_BELOW: u64 = 1 << 62;

pub(crate) struct RateLimiter {
    /// The schedule: when the next permit is due, in the unit its tag says.
    tat: AtomicU64,
    /// `T` and `tau` in ticks, next to `tat`: written before `tat` is tagged
    /// (a permit reads them after `tat`, with acquire) and by
    /// [`RateLimiter::reconfigure`] after.
    tick_interval: AtomicU64,
    tick_tolerance: AtomicU64,
    /// The counter's nanoseconds a tick (32.32) the two above were made with: how
    /// a wait in ticks reads in nanoseconds.
    tick_scale: AtomicU64,
    /// `T`, `tau` and `max_wait` in nanoseconds. These and the two above change in
    /// place with live configuration; `tat` is kept, so permits already granted
    /// still count against the new rate.
    interval: AtomicU64,
    tolerance: AtomicU64,
    max_wait: AtomicU64,
    /// The settings in force, held while they change and while the schedule moves
    /// into ticks, so the ticks' `T` and `tau` are always made from them.
    settings: Mutex<RateLimitConfig>,
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

/// A reading of the time and the schedule's `T` and `tau`, in the unit of the
/// schedule word it is used with (`now` carries that word's tag).
#[derive(Clone, Copy, Debug)]
struct At<'a> {
    now: u64,
    interval: u64,
    tolerance: u64,
    /// The counter's nanoseconds a tick (32.32) for a schedule in ticks, read
    /// only when a wait is to be told in nanoseconds (a refusal or a
    /// reservation), not by a permit due now; `None` in nanoseconds.
    scale: Option<&'a AtomicU64>,
}

impl At<'_> {
    /// A span of this unit in nanoseconds.
    #[inline]
    fn nanos(self, span: u64) -> u64 {
        match self.scale {
            None => span,
            Some(mult) => clock::ticks_to_nanos(span, mult.load(Relaxed)),
        }
    }
}

impl RateLimiter {
    pub(crate) fn new(config: RateLimitConfig) -> Self {
        let (interval, tolerance, max_wait) = Self::params(&config);
        Self {
            tat: AtomicU64::new(0),
            tick_interval: AtomicU64::new(0),
            tick_tolerance: AtomicU64::new(0),
            tick_scale: AtomicU64::new(0),
            interval: AtomicU64::new(interval),
            tolerance: AtomicU64::new(tolerance),
            max_wait: AtomicU64::new(max_wait),
            settings: Mutex::new(config),
        }
    }

    /// `T`, `tau` and `max_wait` in nanoseconds.
    fn params(config: &RateLimitConfig) -> (u64, u64, u64) {
        let per = clock::dur_nanos(config.rate.per);
        let interval = per.div_ceil(u64::from(config.rate.permits.max(1))).max(1);
        (
            interval,
            interval.saturating_mul(u64::from(config.burst.max(1) - 1)),
            clock::dur_nanos(config.max_wait),
        )
    }

    /// `T` and `tau` in ticks of a counter of `mult` nanoseconds a tick (32.32):
    /// `T` rounded up to a whole tick, `tau` that many ticks per permit of the
    /// burst beyond the first.
    fn tick_params(config: &RateLimitConfig, mult: u64) -> (u64, u64) {
        let per = u128::from(clock::dur_nanos(config.rate.per)) << 32;
        let each = u128::from(mult.max(1)) * u128::from(config.rate.permits.max(1));
        let interval = u64::try_from(per.div_ceil(each)).unwrap_or(u64::MAX).max(1);
        (
            interval,
            interval.saturating_mul(u64::from(config.burst.max(1) - 1)),
        )
    }

    fn settings(&self) -> impl std::ops::DerefMut<Target = RateLimitConfig> + '_ {
        // The lock guards plain stores of settings computed before: a panic
        // cannot leave them half made.
        self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// New rate, burst and wait, for the next permit.
    pub(crate) fn reconfigure(&self, config: RateLimitConfig) {
        let mut settings = self.settings();
        *settings = config;
        let (interval, tolerance, max_wait) = Self::params(&config);
        self.interval.store(interval, Relaxed);
        self.tolerance.store(tolerance, Relaxed);
        self.max_wait.store(max_wait, Relaxed);
        if self.tat.load(Relaxed) & TICKS != 0 {
            self.set_tick_params(&config, self.tick_scale.load(Relaxed));
        }
    }

    fn set_tick_params(&self, config: &RateLimitConfig, mult: u64) {
        let (interval, tolerance) = Self::tick_params(config, mult);
        self.tick_interval.store(interval, Relaxed);
        self.tick_tolerance.store(tolerance, Relaxed);
        self.tick_scale.store(mult, Relaxed);
    }

    /// The schedule in nanoseconds at `now`.
    #[inline(always)]
    fn in_nanos(&self, now: Nanos) -> At<'_> {
        At {
            now,
            interval: self.interval.load(Relaxed),
            tolerance: self.tolerance.load(Relaxed),
            scale: None,
        }
    }

    /// The schedule in ticks, now: the counter's reading, tagged. Only for a
    /// schedule word that is in ticks (read with acquire, so `T` and `tau` in ticks
    /// are the ones made before it was tagged, or later).
    #[inline(always)]
    fn in_ticks(&self) -> At<'_> {
        self.in_ticks_at(clock::cpu_ticks())
    }

    /// [`RateLimiter::in_ticks`] at the counter reading `ticks`.
    #[inline(always)]
    fn in_ticks_at(&self, ticks: u64) -> At<'_> {
        At {
            now: ticks | TICKS,
            interval: self.tick_interval.load(Relaxed),
            tolerance: self.tick_tolerance.load(Relaxed),
            scale: Some(&self.tick_scale),
        }
    }

    /// Where the schedule is to be kept from now on: `Some(mult)` once the counter
    /// is the source, ticks at least once a nanosecond (its ticks are then no
    /// coarser than nanoseconds) and reads below [`TICKS_BELOW`].
    fn ticks_due() -> Option<u64> {
        clock::cpu_scale().filter(|&mult| mult <= 1 << 32 && clock::cpu_ticks() < TICKS_BELOW)
    }

    /// Moves the schedule into ticks (at most once: the word stays tagged). The
    /// time still ahead of `tat`, if any, is carried over rounded up, so no permit
    /// comes earlier than it would have.
    #[cold]
    #[inline(never)]
    fn move_to_ticks(&self, mult: u64) {
        self.move_to_ticks_with(mult, clock::cpu_reading);
    }

    /// [`RateLimiter::move_to_ticks`] with `reading` for the counter and the same
    /// instant on the shared scale.
    fn move_to_ticks_with(&self, mult: u64, reading: impl Fn() -> (u64, Nanos)) {
        let settings = self.settings();
        let mut tat = self.tat.load(Relaxed);
        if tat & TICKS != 0 {
            return;
        }
        self.set_tick_params(&settings, mult);
        loop {
            let (ticks, now) = reading();
            let word = Self::tat_in_ticks(tat, now, ticks, mult);
            match self.tat.compare_exchange(tat, word, Release, Relaxed) {
                Ok(_) => return,
                Err(cur) => tat = cur,
            }
        }
    }

    /// The schedule word in ticks for `tat` in nanoseconds, with the counter reading
    /// `ticks` at `now` on the shared scale.
    fn tat_in_ticks(tat: Nanos, now: Nanos, ticks: u64, mult: u64) -> u64 {
        let ahead = clock::nanos_to_ticks(tat.saturating_sub(now), mult);
        ticks.saturating_add(ahead).min(TICKS - 1) | TICKS
    }

    /// Takes a permit at `now`, or reserves one up to `max_wait` ahead.
    #[cfg(test)]
    pub(crate) fn acquire_at(&self, now: Nanos) -> Result<Grant, Limited> {
        self.reserve_at(now).map(|(grant, _)| grant)
    }

    /// Takes a permit at `now` (in nanoseconds) as `acquire_at` (a test helper)
    /// does, also returning the `tat` the permit found and the one it left behind
    /// (what [`RateLimiter::refund`] needs).
    #[cfg(test)]
    fn reserve_at(&self, now: Nanos) -> Result<(Grant, Taken), Limited> {
        let tat = self.tat.load(Acquire);
        self.reserve_in(tat, self.in_nanos(now))
            .expect("a schedule in nanoseconds")
    }

    /// Takes a permit due at `now` (in nanoseconds), as the lane does.
    #[cfg(test)]
    fn take_now_at(&self, now: Nanos) -> bool {
        let tat = self.tat.load(Acquire);
        self.take_in(tat, self.in_nanos(now))
            .expect("a schedule in nanoseconds")
    }

    /// What `attempt` decides at one instant read on both clocks, `now` on the
    /// shared scale and `ticks` on the counter, in the unit the schedule is in.
    #[cfg(any(test, resilience_loom))]
    fn either<R>(&self, now: Nanos, ticks: u64, attempt: impl Fn(u64, At<'_>) -> Option<R>) -> R {
        self.decide(
            |tagged| {
                Some(if tagged {
                    self.in_ticks_at(ticks)
                } else {
                    self.in_nanos(now)
                })
            },
            attempt,
        )
    }

    /// A permit or a reservation at one instant read on both clocks (see
    /// [`RateLimiter::either`]).
    #[cfg(any(test, resilience_loom))]
    pub(crate) fn reserve_either(&self, now: Nanos, ticks: u64) -> Result<(Grant, Taken), Limited> {
        self.either(now, ticks, |tat, at| self.reserve_in(tat, at))
    }

    /// A permit due at one instant read on both clocks, as the lane takes it.
    #[cfg(any(test, resilience_loom))]
    pub(crate) fn take_either(&self, now: Nanos, ticks: u64) -> bool {
        self.either(now, ticks, |tat, at| self.take_in(tat, at))
    }

    /// Moves the schedule into ticks of a counter of `mult` nanoseconds a tick
    /// that reads `ticks` at `now`.
    #[cfg(any(test, resilience_loom))]
    pub(crate) fn move_to_ticks_at(&self, mult: u64, now: Nanos, ticks: u64) {
        self.move_to_ticks_with(mult, || (ticks, now));
    }

    /// Whether the schedule is in ticks.
    #[cfg(any(test, resilience_loom))]
    pub(crate) fn schedule_in_ticks(&self) -> bool {
        self.tat.load(Relaxed) & TICKS != 0
    }

    /// One step of the schedule at `at`, from the word `tat` (of `at`'s unit):
    /// `admit` is told when the permit's slot starts and says how long the call
    /// waits for it (in nanoseconds), or why it is not taken; the slot is then
    /// taken by one compare-and-swap. `None` when the schedule moved into ticks
    /// meanwhile: nothing was taken, and the caller reads the time again.
    #[inline(always)]
    fn step<R>(
        &self,
        mut tat: u64,
        at: At<'_>,
        admit: impl Fn(u64) -> Result<u64, R>,
    ) -> Option<Result<(u64, Taken), R>> {
        let unit = at.now & TICKS;
        loop {
            let start = tat.max(at.now);
            let wait = match admit(start) {
                Ok(wait) => wait,
                Err(r) => return Some(Err(r)),
            };
            // Saturates for a period of centuries: such a limiter grants one permit.
            let end = start.saturating_add(at.interval);
            match self.tat.compare_exchange_weak(tat, end, Relaxed, Acquire) {
                Ok(_) => return Some(Ok((wait, Taken { start, end }))),
                Err(cur) if cur & TICKS != unit => return None,
                Err(cur) => tat = cur,
            }
        }
    }

    /// A permit at `at` or a reservation up to `max_wait` ahead, on the schedule
    /// word `tat` (see [`RateLimiter::step`]).
    #[inline(always)]
    fn reserve_in(&self, tat: u64, at: At<'_>) -> Option<Result<(Grant, Taken), Limited>> {
        let taken = self.step(tat, at, |start| {
            let wait = match start.saturating_sub(at.tolerance).saturating_sub(at.now) {
                0 => 0,
                span => at.nanos(span),
            };
            if wait > self.max_wait.load(Relaxed) {
                return Err(Limited {
                    retry_after: Duration::from_nanos(wait),
                });
            }
            Ok(wait)
        })?;
        Some(taken.map(|(wait, taken)| match wait {
            0 => (Grant::Now, taken),
            wait => (Grant::After(Duration::from_nanos(wait)), taken),
        }))
    }

    /// Takes a permit due now, if there is one (the lane): `false` changes nothing,
    /// and the call then goes through [`RateLimiter::acquire`] (a wait or a refusal).
    #[inline]
    pub(crate) fn take_now(&self) -> bool {
        let tat = self.tat.load(Acquire);
        if tat & TICKS != 0 {
            if let Some(taken) = self.take_in(tat, self.in_ticks()) {
                return taken;
            }
        }
        self.slow(|tat, at| self.take_in(tat, at))
    }

    /// A permit due at `at` (see [`RateLimiter::step`]): `start - now` is the wait
    /// (`start >= now`), none within the burst.
    #[inline(always)]
    fn take_in(&self, tat: u64, at: At<'_>) -> Option<bool> {
        let taken = self.step(tat, at, |start| {
            if start - at.now > at.tolerance {
                Err(())
            } else {
                Ok(0)
            }
        })?;
        Some(taken.is_ok())
    }

    /// A permit now or a reservation; given back when dropped unless used.
    #[inline]
    pub(crate) fn acquire(&self) -> Result<Reservation<'_>, Limited> {
        let tat = self.tat.load(Acquire);
        let reserved = if tat & TICKS != 0 {
            self.reserve_in(tat, self.in_ticks())
        } else {
            None
        };
        let (grant, taken) = match reserved {
            Some(r) => r?,
            None => self.slow(|tat, at| self.reserve_in(tat, at))?,
        };
        Ok(Reservation {
            limiter: self,
            grant,
            taken,
        })
    }

    /// What `attempt` decides on a schedule in nanoseconds, read on tokio's clock
    /// or the CPU's while it is being calibrated, or first moved into ticks (and
    /// on one that moved meanwhile).
    #[inline(never)]
    fn slow<R>(&self, attempt: impl Fn(u64, At<'_>) -> Option<R>) -> R {
        self.decide(
            |tagged| {
                if tagged {
                    Some(self.in_ticks())
                } else if let Some(mult) = Self::ticks_due() {
                    self.move_to_ticks(mult);
                    None
                } else {
                    Some(self.in_nanos(clock::now_nanos()))
                }
            },
            attempt,
        )
    }

    /// What `attempt` decides on the schedule word as it is, at the reading
    /// `read` gives for it (told whether the word is in ticks), until both
    /// agree on the unit: `read` gives `None`, and `attempt` `None`, when the
    /// schedule moved into ticks meanwhile.
    #[inline(always)]
    fn decide<'a, R>(
        &'a self,
        read: impl Fn(bool) -> Option<At<'a>>,
        attempt: impl Fn(u64, At<'a>) -> Option<R>,
    ) -> R {
        loop {
            let tat = self.tat.load(Acquire);
            let Some(at) = read(tat & TICKS != 0) else {
                continue;
            };
            if let Some(r) = attempt(tat, at) {
                return r;
            }
        }
    }

    /// Gives back a permit, if it is still the last one handed out. Otherwise it
    /// stays taken: later callers' slots are fixed already (a permit taken before
    /// the schedule moved into ticks is one of those).
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

    /// Half a nanosecond a tick: times in either unit convert exactly.
    const TWO_GHZ: u64 = 1 << 31;
    const T0: Nanos = 1 << 62;

    /// The counter's reading at `now` (a 2 GHz counter that has run for a day at
    /// `T0`).
    fn ticks(now: Nanos) -> u64 {
        86_400 * 2_000_000_000 + 2 * (now - T0)
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn moved_into_ticks_the_schedule_grants_and_waits_as_it_did() {
        let (a, b) = (
            limiter(10, 2, Duration::from_millis(500)),
            limiter(10, 2, Duration::from_millis(500)),
        );
        // Both spend the burst and reserve one permit ahead.
        for l in [&a, &b] {
            assert_eq!(l.acquire_at(T0), Ok(Grant::Now));
            assert_eq!(l.acquire_at(T0), Ok(Grant::Now));
            assert_eq!(
                l.acquire_at(T0),
                Ok(Grant::After(Duration::from_millis(100)))
            );
        }
        b.move_to_ticks_at(TWO_GHZ, T0, ticks(T0));
        assert!(b.schedule_in_ticks() && !a.schedule_in_ticks());
        let mut seen = Vec::new();
        for at in [
            0, 50, 100, 150, 400, 400, 400, 400, 400, 400, 2_000, 2_000, 2_000,
        ] {
            let now = T0 + at * MS;
            let want = a.reserve_either(now, ticks(now)).map(|(g, _)| g);
            assert_eq!(
                b.reserve_either(now, ticks(now)).map(|(g, _)| g),
                want,
                "at {at} ms"
            );
            seen.push(want);
        }
        // The sequence went through waits, refusals and permits due now.
        assert!(seen.contains(&Ok(Grant::Now)));
        assert!(seen.iter().any(|g| matches!(g, Ok(Grant::After(_)))));
        assert!(seen.iter().any(Result::is_err));
        // Moving again changes nothing.
        let tat = b.tat.load(Relaxed);
        b.move_to_ticks_at(TWO_GHZ, T0 + 3_000 * MS, ticks(T0 + 3_000 * MS));
        assert_eq!(b.tat.load(Relaxed), tat);
    }

    #[test]
    fn a_schedule_in_ticks_takes_new_settings() {
        let l = limiter(10, 3, Duration::ZERO);
        l.move_to_ticks_at(TWO_GHZ, T0, ticks(T0));
        l.reconfigure(RateLimitConfig {
            rate: Rate::new(1, Duration::from_secs(1)),
            burst: 1,
            max_wait: Duration::ZERO,
        });
        assert!(l.take_either(T0, ticks(T0)));
        let half = T0 + 500 * MS;
        assert!(!l.take_either(half, ticks(half)));
        assert_eq!(
            l.reserve_either(half, ticks(half)).unwrap_err().retry_after,
            Duration::from_millis(500)
        );
        let second = T0 + 1_000 * MS;
        assert!(l.take_either(second, ticks(second)));
    }

    #[test]
    fn a_permit_taken_before_the_move_into_ticks_is_not_given_back_after() {
        let l = limiter(10, 1, Duration::from_millis(500));
        assert_eq!(l.acquire_at(T0), Ok(Grant::Now));
        let (grant, taken) = l.reserve_at(T0).unwrap();
        assert_eq!(grant, Grant::After(Duration::from_millis(100)));
        l.move_to_ticks_at(TWO_GHZ, T0, ticks(T0));
        l.refund(taken);
        assert_eq!(
            l.reserve_either(T0, ticks(T0)).map(|(g, _)| g),
            Ok(Grant::After(Duration::from_millis(200)))
        );
    }

    #[test]
    fn in_ticks_the_interval_is_rounded_up_to_a_whole_tick() {
        let config = |permits, burst| RateLimitConfig {
            rate: Rate::new(permits, Duration::from_secs(1)),
            burst,
            max_wait: Duration::ZERO,
        };
        assert_eq!(
            RateLimiter::tick_params(&config(10, 3), TWO_GHZ),
            (200_000_000, 400_000_000)
        );
        assert_eq!(
            RateLimiter::tick_params(&config(1_000_000_000, 1), TWO_GHZ),
            (2, 0)
        );
        // A 3 GHz counter as calibration measures it (a tick a little under a third
        // of a nanosecond): a nanosecond is a little over 3 ticks, so 4.
        let three_ghz = (1u64 << 32) / 3;
        assert_eq!(
            RateLimiter::tick_params(&config(1_000_000_000, 1), three_ghz).0,
            4
        );
        assert_eq!(
            RateLimiter::tick_params(&config(1_000, 1), three_ghz).0,
            3_000_001
        );
    }

    #[test]
    fn time_still_ahead_is_carried_into_ticks_rounded_up() {
        // Nothing ahead: the schedule starts at the reading.
        assert_eq!(RateLimiter::tat_in_ticks(0, T0, 77, TWO_GHZ), 77 | TICKS);
        assert_eq!(RateLimiter::tat_in_ticks(T0, T0, 77, TWO_GHZ), 77 | TICKS);
        // 100 ms ahead at 2 GHz.
        assert_eq!(
            RateLimiter::tat_in_ticks(T0 + 100 * MS, T0, 77, TWO_GHZ),
            (77 + 200_000_000) | TICKS
        );
        // A third of a nanosecond a tick, rounded down by calibration: 1 ns
        // ahead is more than 3 ticks, so 4.
        assert_eq!(
            RateLimiter::tat_in_ticks(T0 + 1, T0, 77, (1 << 32) / 3),
            (77 + 4) | TICKS
        );
        // The schedule never reaches the tag bit.
        assert_eq!(
            RateLimiter::tat_in_ticks(u64::MAX >> 1, 0, TICKS - 2, TWO_GHZ),
            (TICKS - 1) | TICKS
        );
    }

    proptest::proptest! {
        /// Moved into ticks at any point, a limiter grants, reserves and refuses
        /// exactly as one kept in nanoseconds, step by step (a 2 GHz counter,
        /// whose ticks convert exactly).
        #[test]
        fn ticks_and_nanoseconds_decide_alike(
            burst in 1u32..4,
            max_wait_ms in 0u64..400,
            moved_at in 0usize..40,
            steps in proptest::collection::vec((0u64..250, proptest::bool::ANY), 1..40),
        ) {
            let max_wait = Duration::from_millis(max_wait_ms);
            let (a, b) = (limiter(10, burst, max_wait), limiter(10, burst, max_wait));
            let mut now = T0;
            for (i, (advance_ms, lane)) in steps.into_iter().enumerate() {
                if i == moved_at {
                    b.move_to_ticks_at(TWO_GHZ, now, ticks(now));
                }
                now += advance_ms * MS;
                if lane {
                    proptest::prop_assert_eq!(
                        a.take_either(now, ticks(now)),
                        b.take_either(now, ticks(now)),
                        "step {}", i
                    );
                } else {
                    proptest::prop_assert_eq!(
                        a.reserve_either(now, ticks(now)).map(|(g, _)| g),
                        b.reserve_either(now, ticks(now)).map(|(g, _)| g),
                        "step {}", i
                    );
                }
            }
        }
    }
}
