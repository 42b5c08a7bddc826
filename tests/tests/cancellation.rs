//! Cancellation and panics.
//!
//! # A dropped call
//!
//! A call's future may be dropped at any of its await points (a `tokio::select!`
//! losing, a `tokio::time::timeout` around it, an aborted task). Whatever point it is
//! dropped at, it gives back what it holds and records no outcome:
//!
//! | await point | bulkhead slot | half-open probe | rate-limit permit |
//! | --- | --- | --- | --- |
//! | (a) waiting for its rate-limit permit | not taken yet | freed | given back (unused) |
//! | (b) waiting for a bulkhead slot | not taken yet | freed | given back (unused) |
//! | (c) in the body | freed | freed | kept: the body ran, the permit was used |
//! | (d) in the per-attempt timeout's sleep | freed | freed | kept (used) |
//! | (e) in the retry backoff sleep | already freed | already freed (the attempt's outcome was recorded) | kept (used); the next attempt never reserved one |
//! | (f) inside `total_timeout` | as at the inner point | as at the inner point | as at the inner point |
//!
//! "Given back" means the next permit is available at the time it would have been had
//! the dropped call never reserved one. A dropped call is neither a success nor a
//! failure (`calls` does not move), is not a timeout, and a retry it never began is
//! not counted in `retries`. When `total_timeout` itself elapses, the inner call is
//! dropped the same way; the call then counts one timeout (not a breaker failure) and
//! returns `ResilienceError::Timeout`.
//!
//! A call dropped while *another* future's panic unwinds through it (a sibling in a
//! `join!`) is a cancelled call too: it is not recorded as a failure.
//!
//! # Panics
//!
//! - A body that panics is recorded as one failure (it can trip the breaker, and a
//!   panicking probe reopens it), gives back its bulkhead slot and probe, is not
//!   retried, and the panic continues to the caller unchanged: an async caller that
//!   spawned the call gets a `JoinError` with `is_panic()`, a sync caller can
//!   `catch_unwind` it. The fallback does not run for a panic.
//! - A fallback that panics: the panic propagates to the caller. The call's outcome
//!   was recorded before the fallback ran (`failures` shows it) and `fallbacks` was
//!   incremented once.
//! - A fallback that returns `Err`: that error is what the caller gets.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use resilience_runtime::prelude::*;
use resilience_runtime::{Backoff, Hooks, Jitter, Policy, Rate, Resilience, ResilienceBuilder};
use tokio::sync::Semaphore;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
enum E {
    Boom,
    Ignored,
    FromFallback(String),
    R(ResilienceError),
}

impl From<ResilienceError> for E {
    fn from(e: ResilienceError) -> Self {
        E::R(e)
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn st(name: &str) -> ServiceStatus {
    status(name).unwrap_or_else(|| panic!("service {name} is not registered"))
}

/// Polls `fut` once with the current task's waker.
async fn poll_once<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    let mut fut = Some(fut);
    std::future::poll_fn(move |cx| Poll::Ready(fut.take().unwrap().poll(cx))).await
}

#[track_caller]
fn assert_circuit_open(r: Result<(), E>) {
    assert!(
        matches!(r, Err(E::R(ResilienceError::CircuitOpen { .. }))),
        "expected CircuitOpen, got {r:?}"
    );
}

/// The breaker trips on its first failure and cools down for 10 s; one probe at a
/// time; no retry; a rate limit of 1 permit per `interval` (burst `burst`, waits up to
/// 60 s); one bulkhead slot (waits up to 60 s).
fn policy(name: &str, interval: Duration, burst: u32) -> ResilienceBuilder {
    Resilience::builder(name)
        .failure_threshold(1)
        .cooldown(secs(10))
        .half_open_calls(1)
        .success_threshold(1)
        .no_retry()
        .rate(Rate::new(1, interval))
        .burst(burst)
        .rate_max_wait(secs(60))
        .max_concurrent(1)
        .bulkhead_max_wait(secs(60))
}

fn never(_: &E) -> bool {
    false
}

/// Trips the breaker with one failing call (which takes a rate permit at `t0`), then
/// lets the cooldown pass. Returns `t0`.
async fn trip_and_cool_down(p: &Policy, runs: &AtomicU32) -> Instant {
    let t0 = Instant::now();
    let not_retried = Hooks {
        retry_if: Some(never),
        ..Hooks::DEFAULT
    };
    let r: Result<(), E> = p
        .call_with(&not_retried, || async {
            runs.fetch_add(1, SeqCst);
            Err(E::Boom)
        })
        .await;
    assert_eq!(r, Err(E::Boom));
    assert_eq!(p.service().state(), CircuitState::Open);
    tokio::time::advance(secs(10)).await;
    t0
}

/// A call whose body counts its run and never finishes.
async fn pending_call(p: &Policy, runs: &AtomicU32) -> Result<(), E> {
    p.call(|| async {
        runs.fetch_add(1, SeqCst);
        std::future::pending::<Result<(), E>>().await
    })
    .await
}

/// A call that succeeds at once; returns when its body started.
async fn timed_call(p: &Policy, runs: &AtomicU32) -> Instant {
    let at = std::sync::Mutex::new(None);
    let r: Result<(), E> = p
        .call(|| async {
            *at.lock().unwrap() = Some(Instant::now());
            runs.fetch_add(1, SeqCst);
            Ok(())
        })
        .await;
    assert_eq!(r, Ok(()));
    let at = at.lock().unwrap().expect("the body ran");
    at
}

/// A call that the breaker (with its one probe slot taken) rejects at once.
async fn rejected_call(p: &Policy, runs: &AtomicU32) {
    let before = runs.load(SeqCst);
    assert_circuit_open(
        p.call(|| async {
            runs.fetch_add(1, SeqCst);
            Ok(())
        })
        .await,
    );
    assert_eq!(runs.load(SeqCst), before, "a rejected call runs no body");
}

/// A probe that holds the only bulkhead slot until `gate` gets a permit.
fn holder(
    p: &Policy,
    runs: &Arc<AtomicU32>,
    gate: &Arc<Semaphore>,
) -> tokio::task::JoinHandle<Result<(), E>> {
    let (p, runs, gate) = (p.clone(), runs.clone(), gate.clone());
    tokio::spawn(async move {
        p.call(|| {
            let (runs, gate) = (runs.clone(), gate.clone());
            async move {
                runs.fetch_add(1, SeqCst);
                gate.acquire().await.unwrap().forget();
                Ok(())
            }
        })
        .await
    })
}

async fn until_runs(runs: &AtomicU32, n: u32) {
    for _ in 0..100 {
        if runs.load(SeqCst) >= n {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("only {} of {n} bodies started", runs.load(SeqCst));
}

// (a)
#[tokio::test(start_paused = true)]
async fn dropped_in_the_rate_limit_wait_frees_the_probe_and_gives_the_permit_back() {
    let name = "cancel::a_rate_wait";
    // One permit per 20 s: the tripping call's permit makes the probe at t0+10s wait
    // for the next one, at t0+20s.
    let p = policy(name, secs(20), 1).build().unwrap();
    let runs = AtomicU32::new(0);
    let t0 = trip_and_cool_down(&p, &runs).await;

    let mut v = Box::pin(pending_call(&p, &runs));
    assert!(poll_once(v.as_mut()).await.is_pending());
    // At the rate-limit wait: admitted as the probe, no slot taken, body not run.
    assert_eq!(p.service().state(), CircuitState::HalfOpen);
    assert_eq!(runs.load(SeqCst), 1);
    assert_eq!(p.service().bulkhead_available(), Some(1));
    rejected_call(&p, &runs).await;
    tokio::time::advance(secs(5)).await;
    assert!(poll_once(v.as_mut()).await.is_pending());
    assert_eq!(
        runs.load(SeqCst),
        1,
        "still waiting for the permit of t0+20s"
    );
    drop(v);

    assert_eq!(p.service().bulkhead_available(), Some(1));
    assert_eq!(Instant::now() - t0, secs(15));
    // The next call is admitted as the probe, and its permit is the one the dropped
    // call had reserved: t0+20s (without the refund it would be t0+40s).
    let at = timed_call(&p, &runs).await;
    assert_eq!(at - t0, secs(20));
    let s = st(name);
    assert_eq!(
        (
            s.state,
            s.calls,
            s.failures,
            s.successes,
            s.rejections,
            s.timeouts
        ),
        (CircuitState::Closed, 2, 1, 1, 1, 0)
    );
    assert_eq!(p.service().bulkhead_available(), Some(1));
}

// (b)
#[tokio::test(start_paused = true)]
async fn dropped_in_the_bulkhead_wait_frees_the_probe_and_gives_the_unused_permit_back() {
    let name = "cancel::b_bulkhead_wait";
    // Two probes at once, both needed to close; 1 permit/s with a burst of 2.
    let p = policy(name, secs(1), 2)
        .half_open_calls(2)
        .success_threshold(2)
        .build()
        .unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let t0 = trip_and_cool_down(&p, &runs).await;

    // Probe 1 takes the only slot and holds it.
    let gate = Arc::new(Semaphore::new(0));
    let h = holder(&p, &runs, &gate);
    until_runs(&runs, 2).await;
    assert_eq!(p.service().bulkhead_available(), Some(0));

    // Probe 2 gets its permit at once and waits for the slot.
    let mut v = Box::pin(pending_call(&p, &runs));
    assert!(poll_once(v.as_mut()).await.is_pending());
    assert_eq!(runs.load(SeqCst), 2, "waiting for the slot, body not run");
    assert_eq!(p.service().state(), CircuitState::HalfOpen);
    rejected_call(&p, &runs).await; // both probe slots are taken
    tokio::time::advance(ms(500)).await;
    assert!(poll_once(v.as_mut()).await.is_pending());
    assert_eq!(runs.load(SeqCst), 2);
    drop(v);
    assert_eq!(Instant::now() - t0, ms(10_500));

    // The dropped probe's slot is free again: W is admitted as the second probe. Had
    // the dropped call never reserved, W's permit is free now (t0+10.5s: the tat is
    // t0+11s, within the burst's tolerance); without the refund it would come at
    // t0+11s.
    let w = {
        let (p, runs) = (p.clone(), runs.clone());
        tokio::spawn(async move { timed_call(&p, &runs).await })
    };
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(p.service().state(), CircuitState::HalfOpen);
    gate.add_permits(1);
    assert_eq!(h.await.unwrap(), Ok(()));
    let at = w.await.unwrap();
    assert_eq!(at - t0, ms(10_500));
    let s = st(name);
    assert_eq!(
        (s.state, s.calls, s.failures, s.successes, s.rejections),
        (CircuitState::Closed, 3, 1, 2, 1)
    );
    assert_eq!(p.service().bulkhead_available(), Some(1));
}

// (c)
#[tokio::test(start_paused = true)]
async fn dropped_in_the_body_frees_the_slot_and_the_probe_and_keeps_the_used_permit() {
    let name = "cancel::c_body";
    let p = policy(name, secs(1), 1).build().unwrap();
    let runs = AtomicU32::new(0);
    let t0 = trip_and_cool_down(&p, &runs).await;

    let mut v = Box::pin(pending_call(&p, &runs));
    assert!(poll_once(v.as_mut()).await.is_pending());
    // In the body: it holds the slot and the probe.
    assert_eq!(runs.load(SeqCst), 2);
    assert_eq!(p.service().bulkhead_available(), Some(0));
    assert_eq!(p.service().state(), CircuitState::HalfOpen);
    rejected_call(&p, &runs).await;
    tokio::time::advance(ms(500)).await;
    assert!(poll_once(v.as_mut()).await.is_pending());
    drop(v);

    assert_eq!(p.service().bulkhead_available(), Some(1));
    let s = st(name);
    assert_eq!(
        (s.calls, s.failures, s.timeouts),
        (1, 1, 0),
        "no outcome for it"
    );
    // Its permit (t0+10s) was used: the next is at t0+11s, not at once (t0+10.5s).
    let at = timed_call(&p, &runs).await;
    assert_eq!(at - t0, secs(11));
    assert_eq!(
        p.service().state(),
        CircuitState::Closed,
        "it was the probe"
    );
    assert_eq!(p.service().bulkhead_available(), Some(1));
}

// (d)
#[tokio::test(start_paused = true)]
async fn dropped_in_the_per_attempt_timeout_frees_everything_and_is_no_timeout() {
    let name = "cancel::d_attempt_timeout";
    let p = policy(name, secs(1), 1).timeout(secs(2)).build().unwrap();
    let runs = AtomicU32::new(0);
    let t0 = trip_and_cool_down(&p, &runs).await;

    let mut v = Box::pin(pending_call(&p, &runs));
    assert!(poll_once(v.as_mut()).await.is_pending());
    assert_eq!(runs.load(SeqCst), 2);
    assert_eq!(p.service().bulkhead_available(), Some(0));
    tokio::time::advance(ms(1500)).await;
    // Inside the 2 s per-attempt timeout: not elapsed yet.
    assert!(poll_once(v.as_mut()).await.is_pending());
    assert_eq!(st(name).timeouts, 0);
    assert_eq!(p.service().state(), CircuitState::HalfOpen);
    rejected_call(&p, &runs).await;
    drop(v);

    assert_eq!(p.service().bulkhead_available(), Some(1));
    let s = st(name);
    assert_eq!((s.calls, s.failures, s.timeouts), (1, 1, 0));
    let at = timed_call(&p, &runs).await;
    assert_eq!(
        at - t0,
        ms(11_500),
        "the used permit is kept; the next is free"
    );
    assert_eq!(p.service().state(), CircuitState::Closed);
    // The dropped attempt's timer is gone: nothing fires later.
    tokio::time::advance(secs(5)).await;
    assert_eq!(st(name).timeouts, 0);
}

fn is_ignored(e: &E) -> bool {
    *e == E::Ignored
}

// (e)
#[tokio::test(start_paused = true)]
async fn dropped_in_the_retry_backoff_holds_nothing_and_counts_no_retry() {
    let name = "cancel::e_backoff";
    let p = policy(name, secs(1), 1)
        .max_attempts(3)
        .delay(secs(2))
        .backoff(Backoff::Fixed)
        .jitter(Jitter::None)
        .build()
        .unwrap();
    // Ignored errors are retried (and free the probe); others are not.
    let hooks = Hooks {
        ignore_if: Some(is_ignored),
        retry_if: Some(is_ignored),
        ..Hooks::DEFAULT
    };
    let runs = AtomicU32::new(0);
    let t0 = trip_and_cool_down(&p, &runs).await;

    let mut v = Box::pin(p.call_with(&hooks, || async {
        runs.fetch_add(1, SeqCst);
        Err::<(), E>(E::Ignored)
    }));
    assert!(poll_once(v.as_mut()).await.is_pending());
    // In the backoff: attempt 1 ran and was ignored, attempt 2 has not begun.
    let s = st(name);
    assert_eq!(
        (runs.load(SeqCst), s.ignored, s.retries, s.calls),
        (2, 1, 0, 2)
    );
    assert_eq!(p.service().bulkhead_available(), Some(1));
    tokio::time::advance(secs(1)).await;
    assert!(poll_once(v.as_mut()).await.is_pending());
    assert_eq!((runs.load(SeqCst), st(name).retries), (2, 0));
    drop(v);
    tokio::time::advance(secs(5)).await;
    assert_eq!(
        (runs.load(SeqCst), st(name).retries),
        (2, 0),
        "no retry ran"
    );

    assert_eq!(p.service().state(), CircuitState::HalfOpen);
    let at = timed_call(&p, &runs).await;
    assert_eq!(
        at - t0,
        secs(16),
        "admitted as the probe; the permit is free"
    );
    assert_eq!(p.service().state(), CircuitState::Closed);
    assert_eq!(p.service().bulkhead_available(), Some(1));
}

// (f) the caller drops the call inside `total_timeout`, with the inner call waiting
// for a bulkhead slot (holding the probe and an unused permit).
#[tokio::test(start_paused = true)]
async fn dropped_inside_total_timeout_frees_what_the_inner_call_holds() {
    let name = "cancel::f_total_timeout";
    let p = policy(name, secs(1), 2)
        .half_open_calls(2)
        .success_threshold(2)
        .total_timeout(secs(30))
        .build()
        .unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let t0 = trip_and_cool_down(&p, &runs).await;
    let gate = Arc::new(Semaphore::new(0));
    let h = holder(&p, &runs, &gate);
    until_runs(&runs, 2).await;

    let mut v = Box::pin(pending_call(&p, &runs));
    assert!(poll_once(v.as_mut()).await.is_pending());
    tokio::time::advance(ms(500)).await;
    assert!(poll_once(v.as_mut()).await.is_pending());
    assert_eq!(runs.load(SeqCst), 2, "waiting for the slot");
    assert_eq!(p.service().bulkhead_available(), Some(0));
    rejected_call(&p, &runs).await;
    drop(v);
    assert_eq!(st(name).timeouts, 0);

    // As in (b): the next call is admitted as the second probe and its permit is
    // free at once (t0+10.5s; without the refund, t0+11s).
    let w = {
        let (p, runs) = (p.clone(), runs.clone());
        tokio::spawn(async move { timed_call(&p, &runs).await })
    };
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    gate.add_permits(1);
    assert_eq!(h.await.unwrap(), Ok(()));
    assert_eq!(w.await.unwrap() - t0, ms(10_500));
    let s = st(name);
    assert_eq!(
        (s.state, s.calls, s.failures, s.successes, s.timeouts),
        (CircuitState::Closed, 3, 1, 2, 0)
    );
    assert_eq!(p.service().bulkhead_available(), Some(1));
    tokio::time::advance(secs(60)).await;
    assert_eq!(
        st(name).timeouts,
        0,
        "the dropped total timeout never fires"
    );
}

// (f) `total_timeout` elapses while the inner call waits for its rate-limit permit.
#[tokio::test(start_paused = true)]
async fn total_timeout_elapsing_in_the_rate_wait_frees_the_probe_and_the_permit() {
    let name = "cancel::f_total_timeout_fires";
    let p = policy(name, secs(20), 1)
        .total_timeout(secs(5))
        .build()
        .unwrap();
    let runs = AtomicU32::new(0);
    let t0 = trip_and_cool_down(&p, &runs).await;
    let r = pending_call(&p, &runs).await;
    assert!(
        matches!(r, Err(E::R(ResilienceError::Timeout { after, .. })) if after == secs(5)),
        "{r:?}"
    );
    assert_eq!(Instant::now() - t0, secs(15));
    let s = st(name);
    assert_eq!(
        (s.state, s.calls, s.failures, s.timeouts, runs.load(SeqCst)),
        (CircuitState::HalfOpen, 1, 1, 1, 1),
        "a total timeout is no breaker failure; the body never ran"
    );
    // The probe is free and the permit of t0+20s is available again.
    let at = timed_call(&p, &runs).await;
    assert_eq!(at - t0, secs(20));
    assert_eq!(p.service().state(), CircuitState::Closed);
    assert_eq!(p.service().bulkhead_available(), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_while_a_sibling_panics_is_cancelled_not_failed() {
    let name = "cancel::sibling_panic";
    let p = policy(name, secs(1), 1).build().unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    trip_and_cool_down(&p, &runs).await;
    let task = {
        let (p, runs) = (p.clone(), runs.clone());
        tokio::spawn(async move {
            let call = pending_call(&p, &runs);
            let sibling = async {
                tokio::task::yield_now().await;
                panic!("sibling boom");
            };
            tokio::join!(call, sibling)
        })
    };
    let err = task.await.expect_err("the sibling's panic propagates");
    assert!(err.is_panic());
    assert_eq!(runs.load(SeqCst), 2, "the probe's body was running");
    let s = st(name);
    assert_eq!(
        (s.state, s.calls, s.failures),
        (CircuitState::HalfOpen, 1, 1),
        "the dropped probe is no failure"
    );
    assert_eq!(p.service().bulkhead_available(), Some(1));
    timed_call(&p, &runs).await;
    assert_eq!(p.service().state(), CircuitState::Closed);
}

fn panicking_hook(_: &E) -> bool {
    panic!("hook boom")
}

#[tokio::test(start_paused = true)]
async fn nested_and_hook_panics_are_one_failure_per_call_and_leave_nothing_behind() {
    let quiet = |name: &str| {
        Resilience::builder(name)
            .failure_threshold(100)
            .no_retry()
            .max_concurrent(1)
            .build()
            .unwrap()
    };
    let (outer, inner) = (quiet("cancel::nested.outer"), quiet("cancel::nested.inner"));
    // A panic in an inner call's body unwinds through both bodies: one failure each.
    let task = {
        let (outer, inner) = (outer.clone(), inner.clone());
        tokio::spawn(async move {
            outer
                .call(|| async {
                    inner
                        .call(|| async {
                            tokio::task::yield_now().await;
                            panic!("inner boom");
                        })
                        .await
                })
                .await as Result<(), E>
        })
    };
    assert!(task.await.unwrap_err().is_panic());
    for name in ["cancel::nested.outer", "cancel::nested.inner"] {
        let s = st(name);
        assert_eq!((s.calls, s.failures), (1, 1), "{name}");
    }
    assert_eq!(outer.service().bulkhead_available(), Some(1));
    assert_eq!(inner.service().bulkhead_available(), Some(1));

    // A panicking classification hook is the call's own panic too.
    let hooked = quiet("cancel::hook_panic");
    let task = {
        let hooked = hooked.clone();
        tokio::spawn(async move {
            let hooks = Hooks {
                ignore_if: Some(panicking_hook),
                ..Hooks::DEFAULT
            };
            hooked
                .call_with(&hooks, || async { Err::<(), E>(E::Boom) })
                .await
        })
    };
    assert!(task.await.unwrap_err().is_panic());
    let s = st("cancel::hook_panic");
    assert_eq!((s.calls, s.failures), (1, 1));

    // Nothing is left over on this thread: a call dropped during a sibling's panic
    // afterwards is still only cancelled.
    let runs = Arc::new(AtomicU32::new(0));
    let task = {
        let (hooked, runs) = (hooked.clone(), runs.clone());
        tokio::spawn(async move {
            let sibling = async {
                tokio::task::yield_now().await;
                panic!("sibling boom");
            };
            tokio::join!(pending_call(&hooked, &runs), sibling)
        })
    };
    assert!(task.await.unwrap_err().is_panic());
    assert_eq!(runs.load(SeqCst), 1);
    let s = st("cancel::hook_panic");
    assert_eq!((s.calls, s.failures), (1, 1));
    assert_eq!(hooked.service().bulkhead_available(), Some(1));
}

// ---- panics, through the attributes ----

static ASYNC_PANIC_RUNS: AtomicU32 = AtomicU32::new(0);

#[with_resilience(
    service = "cancel.panic.async",
    circuit_breaker(failure_threshold = 1, cooldown = "10s"),
    retry(max_attempts = 3, delay = "1ms"),
    timeout = "5s",
    bulkhead(max_concurrent = 2, max_wait = "1s")
)]
async fn panics_async(panic: bool) -> Result<u32, E> {
    ASYNC_PANIC_RUNS.fetch_add(1, SeqCst);
    tokio::task::yield_now().await;
    if panic {
        panic!("async body boom");
    }
    Ok(1)
}

/// The registered service behind a name (the first registration's settings win).
fn service_of(name: &str) -> Policy {
    Resilience::builder(name).build().unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_async_body_panic_is_one_failure_frees_its_slot_and_reaches_the_caller() {
    let name = "cancel.panic.async";
    let err = tokio::spawn(panics_async(true))
        .await
        .expect_err("the panic propagates");
    assert!(err.is_panic());
    assert_eq!(
        err.into_panic().downcast_ref::<&str>(),
        Some(&"async body boom")
    );
    assert_eq!(ASYNC_PANIC_RUNS.load(SeqCst), 1, "a panic is not retried");
    let s = st(name);
    assert_eq!(
        (s.state, s.calls, s.failures, s.retries, s.timeouts),
        (CircuitState::Open, 1, 1, 0, 0)
    );
    assert_eq!(service_of(name).service().bulkhead_available(), Some(2));
    // After the cooldown the probe slot is free: a probe is admitted and closes it.
    tokio::time::advance(secs(10)).await;
    assert_eq!(panics_async(false).await, Ok(1));
    assert_eq!(st(name).state, CircuitState::Closed);
}

static SYNC_PANIC_RUNS: AtomicU32 = AtomicU32::new(0);

#[with_resilience(
    service = "cancel.panic.sync",
    circuit_breaker(failure_threshold = 1, cooldown = "10s"),
    retry(max_attempts = 3, delay = "1ms"),
    bulkhead(max_concurrent = 2)
)]
fn panics_sync(panic: bool) -> Result<u32, E> {
    SYNC_PANIC_RUNS.fetch_add(1, SeqCst);
    if panic {
        panic!("sync body boom");
    }
    Ok(1)
}

#[test]
fn a_sync_body_panic_is_one_failure_frees_its_slot_and_reaches_the_caller() {
    let name = "cancel.panic.sync";
    let payload = std::panic::catch_unwind(|| panics_sync(true)).expect_err("the panic propagates");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"sync body boom"));
    assert_eq!(SYNC_PANIC_RUNS.load(SeqCst), 1, "a panic is not retried");
    let s = st(name);
    assert_eq!(
        (s.state, s.calls, s.failures, s.retries),
        (CircuitState::Open, 1, 1, 0)
    );
    assert_eq!(service_of(name).service().bulkhead_available(), Some(2));
}

static FB_PANIC_RUNS: AtomicU32 = AtomicU32::new(0);

#[with_resilience(
    service = "cancel.fallback_panics.async",
    circuit_breaker(failure_threshold = 5, cooldown = "10s"),
    retry(max_attempts = 2, delay = "1ms", jitter = "none"),
    bulkhead(max_concurrent = 3)
)]
#[fallback = fallback_panics]
async fn fails_then_fallback_panics_async() -> Result<u32, E> {
    FB_PANIC_RUNS.fetch_add(1, SeqCst);
    Err(E::Boom)
}

#[with_resilience(
    service = "cancel.fallback_panics.sync",
    circuit_breaker(failure_threshold = 5, cooldown = "10s"),
    retry(max_attempts = 2, delay = "1ms", jitter = "none"),
    bulkhead(max_concurrent = 3)
)]
#[fallback = fallback_panics]
fn fails_then_fallback_panics_sync() -> Result<u32, E> {
    Err(E::Boom)
}

fn fallback_panics(e: E) -> Result<u32, E> {
    assert_eq!(e, E::Boom);
    panic!("fallback boom");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_fallback_reaches_the_caller_after_the_outcome_was_recorded() {
    let name = "cancel.fallback_panics.async";
    let err = tokio::spawn(fails_then_fallback_panics_async())
        .await
        .expect_err("the fallback's panic propagates");
    assert!(err.is_panic());
    assert_eq!(
        err.into_panic().downcast_ref::<&str>(),
        Some(&"fallback boom")
    );
    assert_eq!(FB_PANIC_RUNS.load(SeqCst), 2);
    let s = st(name);
    assert_eq!(
        (s.calls, s.failures, s.retries, s.fallbacks, s.state),
        (2, 2, 1, 1, CircuitState::Closed)
    );
    assert_eq!(service_of(name).service().bulkhead_available(), Some(3));
}

#[test]
fn a_panicking_sync_fallback_reaches_the_caller_after_the_outcome_was_recorded() {
    let name = "cancel.fallback_panics.sync";
    let payload = std::panic::catch_unwind(fails_then_fallback_panics_sync)
        .expect_err("the fallback's panic propagates");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"fallback boom"));
    let s = st(name);
    assert_eq!((s.calls, s.failures, s.retries, s.fallbacks), (2, 2, 1, 1));
    assert_eq!(service_of(name).service().bulkhead_available(), Some(3));
}

#[with_resilience(
    service = "cancel.fallback_err",
    circuit_breaker(failure_threshold = 1, cooldown = "10s"),
    retry(max_attempts = 1)
)]
#[fallback = fallback_err]
async fn fallback_returns_err(fail: bool) -> Result<u32, E> {
    if fail {
        Err(E::Boom)
    } else {
        Ok(1)
    }
}

async fn fallback_err(_fail: bool, e: E) -> Result<u32, E> {
    Err(E::FromFallback(format!("{e:?}")))
}

#[tokio::test(start_paused = true)]
async fn a_fallback_returning_err_gives_the_caller_that_error() {
    let name = "cancel.fallback_err";
    assert_eq!(
        fallback_returns_err(true).await,
        Err(E::FromFallback("Boom".into()))
    );
    // Open now: the rejection goes to the fallback too, and its error is returned.
    let r = fallback_returns_err(false).await;
    assert!(
        matches!(&r, Err(E::FromFallback(s)) if s.starts_with("R(CircuitOpen")),
        "{r:?}"
    );
    let s = st(name);
    assert_eq!(
        (s.calls, s.failures, s.rejections, s.fallbacks),
        (1, 1, 1, 2)
    );
}
