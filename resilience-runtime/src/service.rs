//! A service: the breaker, bulkhead and rate limiter that calls naming it share, the
//! counters behind its status, and the call protocol that attributes and the
//! builder both drive.

use std::cell::Cell;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::breaker::{Admission, Breaker, CircuitState, Outcome};
use crate::bulkhead::Bulkhead;
use crate::clock::{self, Instant};
use crate::config::PolicyConfig;
use crate::counters::Counters;
use crate::rate_limit::{RateLimiter, Reservation};
use crate::retry::retry_delay;
use crate::timeout::Timeout;
use crate::{ResilienceError, ServiceName};

/// One protected dependency: its policies' shared state and its counters.
///
/// Services live in the global registry; attributes and [`crate::Resilience`] find
/// them by name.
pub struct Service {
    name: ServiceName,
    config: PolicyConfig,
    pub(crate) breaker: Option<Breaker>,
    pub(crate) bulkhead: Option<Bulkhead>,
    pub(crate) limiter: Option<RateLimiter>,
    pub(crate) counters: Counters,
    random: fn() -> u64,
    /// Computed-key entries: set on use, cleared by the eviction sweep.
    pub(crate) touched: AtomicBool,
    /// Fixed and generated names are never evicted.
    pub(crate) pinned: bool,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Typed per-call-site hooks: how to classify errors and how to build one from a
/// [`ResilienceError`]. Function pointers, so a call site's hooks are a constant.
pub struct Hooks<E> {
    /// Errors that count as failures; others count as successes.
    pub record_if: Option<fn(&E) -> bool>,
    /// Errors that count as neither; wins over `record_if`.
    pub ignore_if: Option<fn(&E) -> bool>,
    /// Only these errors are retried.
    pub retry_if: Option<fn(&E) -> bool>,
    /// A server's hint of how long to wait before the next attempt.
    pub retry_after: Option<fn(&E) -> Option<Duration>>,
    /// Builds `E` from a rejection or timeout. Without it the policies that reject
    /// or time out (breaker, rate limit, bulkhead, timeouts) are not applied.
    pub into_error: Option<fn(ResilienceError) -> E>,
}

impl<E> Hooks<E> {
    /// No hooks: every error is a retryable failure.
    pub const NONE: Hooks<E> = Hooks {
        record_if: None,
        ignore_if: None,
        retry_if: None,
        retry_after: None,
        into_error: None,
    };
}

impl<E: From<ResilienceError>> Hooks<E> {
    /// Every error is a retryable failure; rejections convert with `From`.
    pub const DEFAULT: Hooks<E> = Hooks {
        into_error: Some(<E as From<ResilienceError>>::from),
        ..Hooks::NONE
    };
}

impl<E> Clone for Hooks<E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E> Copy for Hooks<E> {}

impl<E> std::fmt::Debug for Hooks<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("record_if", &self.record_if.is_some())
            .field("ignore_if", &self.ignore_if.is_some())
            .field("retry_if", &self.retry_if.is_some())
            .field("retry_after", &self.retry_after.is_some())
            .field("into_error", &self.into_error.is_some())
            .finish()
    }
}

impl Service {
    pub(crate) fn new(name: &str, config: PolicyConfig, random: fn() -> u64, pinned: bool) -> Self {
        Self {
            name: ServiceName::from(name),
            breaker: config.breaker.map(|b| Breaker::new(name, b)),
            bulkhead: config.bulkhead.map(Bulkhead::new),
            limiter: config.rate_limit.map(RateLimiter::new),
            counters: Counters::new(),
            random,
            touched: AtomicBool::new(true),
            pinned,
            config,
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policies in force.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// The breaker's state (`Closed` when the service has no breaker).
    pub fn state(&self) -> CircuitState {
        self.breaker
            .as_ref()
            .map_or(CircuitState::Closed, Breaker::state)
    }

    /// Starts a call: the retry loop drives [`Call::attempt`] until it breaks.
    #[inline]
    pub fn call<'a, E>(&'a self, hooks: &'a Hooks<E>) -> Call<'a, E> {
        Call {
            svc: self,
            hooks,
            attempt: 0,
            started: None,
            previous: Duration::ZERO,
        }
    }

    /// Runs a whole call (all attempts) under `total_timeout`, when one is set.
    pub async fn total<T, E, F>(&self, hooks: &Hooks<E>, fut: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
    {
        match (self.config.total_timeout, hooks.into_error) {
            (Some(limit), Some(into)) => match Timeout::new(fut, limit).await {
                Ok(r) => r,
                Err(_) => {
                    self.counters.timeouts.fetch_add(1, Relaxed);
                    tracing::debug!(service = %self.name, "total timeout elapsed");
                    Err(into(ResilienceError::timeout(&self.name, limit)))
                }
            },
            _ => fut.await,
        }
    }

    /// Counts one run of the fallback.
    #[inline]
    pub fn fallback_used(&self) {
        self.counters.fallbacks.fetch_add(1, Relaxed);
    }

    fn reject<E>(&self, into: fn(ResilienceError) -> E, e: ResilienceError) -> E {
        self.counters.rejections.add(1);
        tracing::debug!(service = %self.name, error = %e, "call rejected");
        into(e)
    }
}

thread_local! {
    /// Panics that unwound out of a call's own code (see [`Own`]) and that no
    /// [`Admitted`] has claimed yet.
    static OWN_PANICS: Cell<u32> = const { Cell::new(0) };
}

/// Lives on the stack while a call's own code runs (a poll of its body, a sync body,
/// its error classification hooks): a panic unwinding through it is the call's own.
/// A call dropped while some other code's panic unwinds (a sibling in a `join!`) is
/// only cancelled.
struct Own;

impl Drop for Own {
    #[inline]
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = OWN_PANICS.try_with(|c| c.set(c.get() + 1));
        }
    }
}

fn claim_own_panic() -> bool {
    OWN_PANICS
        .try_with(|c| {
            let n = c.get();
            c.set(n.saturating_sub(1));
            n > 0
        })
        .unwrap_or(false)
}

pin_project_lite::pin_project! {
    /// A body whose every poll runs under [`Own`].
    struct OwnBody<F> {
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for OwnBody<F> {
    type Output = F::Output;
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _own = Own;
        self.project().fut.poll(cx)
    }
}

/// A breaker admission that is given back if the call ends without an outcome; a
/// panicking body is recorded as a failure on the way out.
struct Admitted<'a> {
    svc: &'a Service,
    adm: Option<Admission>,
}

impl Admitted<'_> {
    #[inline]
    fn record(mut self, outcome: Outcome) {
        if let (Some(b), Some(adm)) = (&self.svc.breaker, self.adm.take()) {
            b.record(adm, Some(outcome));
        }
    }
    #[inline]
    fn ignore(mut self) {
        if let (Some(b), Some(adm)) = (&self.svc.breaker, self.adm.take()) {
            b.abandon(adm);
        }
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        // `record` and `ignore` consume `self` outside any panic, so a drop while
        // a panic of the call's own body (or hook) unwinds is a failure, also for a
        // service without a breaker. A drop during another panic is a cancellation.
        if std::thread::panicking() && claim_own_panic() {
            self.svc.counters.failures.fetch_add(1, Relaxed);
            if let (Some(b), Some(adm)) = (&self.svc.breaker, self.adm.take()) {
                b.record(
                    adm,
                    Some(Outcome {
                        failure: true,
                        slow: false,
                    }),
                );
            }
        } else if let (Some(b), Some(adm)) = (&self.svc.breaker, self.adm.take()) {
            b.abandon(adm);
        }
    }
}

/// One call through a service's policies: the retry loop calls [`Call::attempt`]
/// with a fresh body until it returns `Break`.
pub struct Call<'a, E> {
    svc: &'a Service,
    hooks: &'a Hooks<E>,
    attempt: u32,
    started: Option<Instant>,
    previous: Duration,
}

impl<E> std::fmt::Debug for Call<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("service", &self.svc.name)
            .field("attempt", &self.attempt)
            .finish()
    }
}

enum Next<T, E> {
    Done(Result<T, E>),
    Retry(E, Duration),
}

impl<'a, E> Call<'a, E> {
    /// Admission through breaker and rate limiter (bulkhead is separate: its wait
    /// differs between async and sync calls).
    #[inline]
    fn begin(&mut self) -> Result<(Admitted<'a>, Option<Reservation<'a>>), E> {
        self.attempt += 1;
        let svc = self.svc;
        if self.attempt > 1 {
            svc.counters.retries.fetch_add(1, Relaxed);
        } else if self
            .svc
            .config
            .retry
            .is_some_and(|r| r.max_elapsed.is_some())
        {
            self.started = Some(clock::now());
        }
        let Some(into) = self.hooks.into_error else {
            return Ok((Admitted { svc, adm: None }, None));
        };
        let adm = match &svc.breaker {
            Some(b) => match b.admit() {
                Ok(a) => Some(a),
                Err(r) => {
                    return Err(svc.reject(
                        into,
                        ResilienceError::circuit_open(&svc.name, r.retry_after),
                    ))
                }
            },
            None => None,
        };
        let admitted = Admitted { svc, adm };
        let reservation = match &svc.limiter {
            Some(l) => match l.acquire() {
                Ok(r) => Some(r),
                Err(lim) => {
                    admitted.ignore();
                    return Err(svc.reject(
                        into,
                        ResilienceError::rate_limited(&svc.name, lim.retry_after),
                    ));
                }
            },
            None => None,
        };
        Ok((admitted, reservation))
    }

    /// The bulkhead refused the call: its probe is freed and its rate-limit permit
    /// (dropped by the caller, unused) given back.
    fn bulkhead_full(&self, admitted: Admitted<'_>, into: fn(ResilienceError) -> E) -> E {
        admitted.ignore();
        self.svc
            .reject(into, ResilienceError::bulkhead_full(&self.svc.name))
    }

    /// Records the outcome and decides what comes next.
    #[inline]
    fn finish<T>(
        &mut self,
        admitted: Admitted<'_>,
        result: Result<T, E>,
        timed_out: bool,
        began: Option<Instant>,
    ) -> Next<T, E> {
        let svc = self.svc;
        let c = &svc.counters;
        let failure = match &result {
            Ok(_) => false,
            Err(_) if timed_out => true,
            Err(e) => {
                let own = Own;
                if self.hooks.ignore_if.is_some_and(|f| f(e)) {
                    drop(own);
                    c.ignored.fetch_add(1, Relaxed);
                    admitted.ignore();
                    return self.after_error(result);
                }
                let failure = self.hooks.record_if.is_none_or(|f| f(e));
                drop(own);
                failure
            }
        };
        if failure {
            c.failures.fetch_add(1, Relaxed);
            admitted.record(Outcome {
                failure: true,
                slow: false,
            });
        } else {
            c.successes.add(1);
            let slow = match (
                svc.breaker.as_ref().and_then(|b| b.config().slow_call),
                began,
            ) {
                (Some(limit), Some(t)) => clock::now().saturating_duration_since(t) > limit,
                _ => false,
            };
            if slow {
                c.slow_calls.fetch_add(1, Relaxed);
            }
            admitted.record(Outcome {
                failure: false,
                slow,
            });
        }
        self.after_error(result)
    }

    fn after_error<T>(&mut self, result: Result<T, E>) -> Next<T, E> {
        let e = match result {
            Ok(v) => return Next::Done(Ok(v)),
            Err(e) => e,
        };
        let Some(r) = &self.svc.config.retry else {
            return Next::Done(Err(e));
        };
        if self.attempt >= r.max_attempts || !self.hooks.retry_if.is_none_or(|f| f(&e)) {
            return Next::Done(Err(e));
        }
        let mut delay = retry_delay(r, self.attempt, self.previous, (self.svc.random)());
        self.previous = delay;
        if let Some(hint) = self.hooks.retry_after.and_then(|f| f(&e)) {
            delay = delay.max(hint);
        }
        if let (Some(max), Some(started)) = (r.max_elapsed, self.started) {
            // Saturating: a server's hint may be as long as `Duration::MAX`.
            if clock::now()
                .saturating_duration_since(started)
                .saturating_add(delay)
                > max
            {
                tracing::debug!(service = %self.svc.name, attempt = self.attempt, "max_elapsed reached: not retrying");
                return Next::Done(Err(e));
            }
        }
        tracing::debug!(service = %self.svc.name, attempt = self.attempt, ?delay, "retry scheduled");
        Next::Retry(e, delay)
    }

    fn timed_out(&self, limit: Duration, into: fn(ResilienceError) -> E) -> E {
        let svc = self.svc;
        svc.counters.timeouts.fetch_add(1, Relaxed);
        tracing::debug!(service = %svc.name, ?limit, "attempt timed out");
        into(ResilienceError::timeout(&svc.name, limit))
    }

    fn timing(&self) -> Option<Instant> {
        match &self.svc.breaker {
            Some(b) if b.config().slow_call.is_some() => Some(clock::now()),
            _ => None,
        }
    }

    /// One attempt: breaker, rate limit and bulkhead admission, the body under the
    /// per-attempt timeout, the outcome recorded, and the retry decision. When it
    /// retries it first sleeps the backoff, then returns `Continue`.
    pub async fn attempt<T, F>(&mut self, body: F) -> ControlFlow<Result<T, E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let (admitted, reservation) = match self.begin() {
            Ok(a) => a,
            Err(e) => return ControlFlow::Break(Err(e)),
        };
        let svc = self.svc;
        // Dropped here (cancelled, or refused by the bulkhead) the permit is given back.
        if let Some(r) = &reservation {
            r.wait().await;
        }
        let permit = match (&svc.bulkhead, self.hooks.into_error) {
            (Some(b), Some(into)) => match b.acquire().await {
                Ok(p) => Some(p),
                Err(_) => {
                    drop(reservation);
                    return ControlFlow::Break(Err(self.bulkhead_full(admitted, into)));
                }
            },
            _ => None,
        };
        if let Some(r) = reservation {
            r.used();
        }
        let began = self.timing();
        let body = OwnBody { fut: body };
        let (result, timed_out) = match (svc.config.timeout, self.hooks.into_error) {
            (Some(limit), Some(into)) => match Timeout::new(body, limit).await {
                Ok(r) => (r, false),
                Err(_) => (Err(self.timed_out(limit, into)), true),
            },
            _ => (body.await, false),
        };
        drop(permit);
        match self.finish(admitted, result, timed_out, began) {
            Next::Done(r) => ControlFlow::Break(r),
            Next::Retry(_, delay) => {
                tokio::time::sleep(delay).await;
                ControlFlow::Continue(())
            }
        }
    }

    /// [`Call::attempt`] for a sync body: waits block the thread. Timeouts do not
    /// apply (a sync body cannot be interrupted).
    pub fn attempt_sync<T>(
        &mut self,
        body: impl FnOnce() -> Result<T, E>,
    ) -> ControlFlow<Result<T, E>> {
        let (admitted, reservation) = match self.begin() {
            Ok(a) => a,
            Err(e) => return ControlFlow::Break(Err(e)),
        };
        let svc = self.svc;
        if let Some(r) = &reservation {
            r.wait_sync();
        }
        let permit = match (&svc.bulkhead, self.hooks.into_error) {
            (Some(b), Some(into)) => match b.acquire_sync() {
                Ok(p) => Some(p),
                Err(_) => {
                    drop(reservation);
                    return ControlFlow::Break(Err(self.bulkhead_full(admitted, into)));
                }
            },
            _ => None,
        };
        if let Some(r) = reservation {
            r.used();
        }
        let began = self.timing();
        let result = {
            let _own = Own;
            body()
        };
        drop(permit);
        match self.finish(admitted, result, false, began) {
            Next::Done(r) => ControlFlow::Break(r),
            Next::Retry(_, delay) => {
                clock::sleep_thread(delay);
                ControlFlow::Continue(())
            }
        }
    }
}
