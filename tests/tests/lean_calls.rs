//! Async attributes whose policies need no timer (no timeout, total timeout, rate
//! limit, bulkhead wait or slow-call threshold) expand to `Service::once_lean`, a
//! smaller future than `Service::once`'s. These tests check it keeps every rule of
//! the general future: outcomes of a pending body are recorded, half-open probes are
//! bounded and close the breaker, a dropped call frees its slot and probe, a panic
//! is one failure, a full bulkhead refuses without running the body. All on tokio's
//! paused clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use resilience_runtime::prelude::*;
use resilience_runtime::{Resilience, ServiceStatus};

#[derive(Debug, Clone, PartialEq)]
enum E {
    Boom,
    R(ResilienceError),
}

impl From<ResilienceError> for E {
    fn from(e: ResilienceError) -> Self {
        E::R(e)
    }
}

fn st(name: &str) -> ServiceStatus {
    status(name).expect("registered")
}

fn bulkhead_available(name: &str) -> Option<u32> {
    Resilience::builder(name)
        .build()
        .unwrap()
        .service()
        .bulkhead_available()
}

fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

fn is_open(r: &Result<u32, E>) -> bool {
    matches!(r, Err(E::R(ResilienceError::CircuitOpen { .. })))
}

// ---- outcomes of a body that is not ready at once ----

static OUTCOME_RUNS: AtomicU32 = AtomicU32::new(0);

#[circuit_breaker(service = "lean.outcomes", failure_threshold = 2, cooldown = "10s")]
async fn outcomes(fail: bool) -> Result<u32, E> {
    OUTCOME_RUNS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(5)).await;
    if fail {
        Err(E::Boom)
    } else {
        Ok(1)
    }
}

#[tokio::test(start_paused = true)]
async fn pending_outcomes_are_recorded_and_the_tripping_call_returns_its_own_error() {
    let name = "lean.outcomes";
    assert_eq!(outcomes(false).await, Ok(1));
    assert_eq!(outcomes(true).await, Err(E::Boom));
    // A success resets the consecutive run: F S F stays closed.
    assert_eq!(outcomes(false).await, Ok(1));
    assert_eq!(outcomes(true).await, Err(E::Boom));
    assert_eq!(st(name).state, CircuitState::Closed);
    // The second failure in a row trips it and is returned as it is.
    assert_eq!(outcomes(true).await, Err(E::Boom));
    assert_eq!(st(name).state, CircuitState::Open);
    let runs = OUTCOME_RUNS.load(SeqCst);
    let r = outcomes(false).await;
    assert!(is_open(&r), "{r:?}");
    assert_eq!(
        OUTCOME_RUNS.load(SeqCst),
        runs,
        "a refused call does not run"
    );
    let s = st(name);
    assert_eq!(
        (s.calls, s.successes, s.failures, s.rejections),
        (5, 2, 3, 1)
    );
}

// ---- half-open probes, a dropped call, a full bulkhead ----

static PROBE_RUNS: AtomicU32 = AtomicU32::new(0);

#[circuit_breaker(
    service = "lean.probe",
    failure_threshold = 1,
    cooldown = "10s",
    half_open_calls = 1
)]
#[bulkhead(max_concurrent = 2)]
async fn probe(fail: bool) -> Result<u32, E> {
    PROBE_RUNS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    if fail {
        Err(E::Boom)
    } else {
        Ok(2)
    }
}

#[tokio::test(start_paused = true)]
async fn probes_are_bounded_and_a_dropped_probe_frees_its_slot_and_probe() {
    let name = "lean.probe";
    assert_eq!(probe(true).await, Err(E::Boom));
    assert_eq!(st(name).state, CircuitState::Open);
    tokio::time::advance(Duration::from_secs(10)).await;

    // A probe is admitted and parks in its body, holding a bulkhead slot.
    let mut first = Box::pin(probe(false));
    assert!(poll_once(first.as_mut()).is_pending());
    assert_eq!(st(name).state, CircuitState::HalfOpen);
    assert_eq!(bulkhead_available(name), Some(1));
    // A second probe is refused while it is in flight, without running.
    let runs = PROBE_RUNS.load(SeqCst);
    let r = probe(false).await;
    assert!(is_open(&r), "{r:?}");
    assert_eq!(PROBE_RUNS.load(SeqCst), runs);

    // Dropped mid-flight: the slot and the probe come back, nothing is recorded.
    let calls = st(name).calls;
    drop(first);
    assert_eq!(bulkhead_available(name), Some(2));
    assert_eq!(st(name).calls, calls);
    assert_eq!(st(name).state, CircuitState::HalfOpen);

    // The freed probe is taken by the next call, whose success closes the breaker.
    assert_eq!(probe(false).await, Ok(2));
    assert_eq!(st(name).state, CircuitState::Closed);
    assert_eq!(bulkhead_available(name), Some(2));
}

static FULL_RUNS: AtomicU32 = AtomicU32::new(0);

#[bulkhead(service = "lean.full", max_concurrent = 1)]
async fn full() -> Result<u32, E> {
    FULL_RUNS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(3)
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_refuses_at_once_without_running_the_body() {
    let mut holder = Box::pin(full());
    assert!(poll_once(holder.as_mut()).is_pending());
    let r = full().await;
    assert!(
        matches!(r, Err(E::R(ResilienceError::BulkheadFull { .. }))),
        "{r:?}"
    );
    assert_eq!(FULL_RUNS.load(SeqCst), 1);
    assert_eq!(holder.await, Ok(3));
    assert_eq!(full().await, Ok(3));
    let s = st("lean.full");
    assert_eq!((s.successes, s.rejections), (2, 1));
}

// ---- a panicking body ----

#[circuit_breaker(service = "lean.panic", failure_threshold = 1, cooldown = "10s")]
#[bulkhead(max_concurrent = 2)]
async fn panics(panic: bool) -> Result<u32, E> {
    tokio::task::yield_now().await;
    if panic {
        panic!("lean body boom");
    }
    Ok(4)
}

#[tokio::test(start_paused = true)]
async fn a_panicking_pending_body_is_one_failure_and_frees_its_slot() {
    let name = "lean.panic";
    let err = tokio::spawn(panics(true))
        .await
        .expect_err("the panic propagates");
    assert!(err.is_panic());
    let s = st(name);
    assert_eq!((s.state, s.calls, s.failures), (CircuitState::Open, 1, 1));
    assert_eq!(bulkhead_available(name), Some(2));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(panics(false).await, Ok(4));
    assert_eq!(st(name).state, CircuitState::Closed);
}

// ---- no policy that can reject: `into_error` is not needed ----

#[with_retry(service = "lean.retry_once", max_attempts = 1)]
async fn retry_once(fail: bool) -> Result<u32, E> {
    tokio::task::yield_now().await;
    if fail {
        Err(E::Boom)
    } else {
        Ok(5)
    }
}

#[tokio::test(start_paused = true)]
async fn a_single_attempt_retry_site_counts_its_outcomes() {
    assert_eq!(retry_once(false).await, Ok(5));
    assert_eq!(retry_once(true).await, Err(E::Boom));
    let s = st("lean.retry_once");
    assert_eq!((s.calls, s.successes, s.failures, s.retries), (2, 1, 1, 0));
}

// ---- a body that panics at its first poll (the swift lane) ----

#[circuit_breaker(
    service = "lean.panic_at_once",
    failure_threshold = 1,
    cooldown = "10s"
)]
#[bulkhead(max_concurrent = 2)]
async fn panics_at_once(panic: bool) -> Result<u32, E> {
    if panic {
        panic!("lean body boom at its first poll");
    }
    Ok(5)
}

#[tokio::test(start_paused = true)]
async fn a_body_panicking_at_its_first_poll_is_one_failure_and_frees_its_slot() {
    let name = "lean.panic_at_once";
    assert_eq!(panics_at_once(false).await, Ok(5));
    let err = tokio::spawn(panics_at_once(true))
        .await
        .expect_err("the panic propagates");
    assert!(err.is_panic());
    let s = st(name);
    assert_eq!(
        (s.state, s.calls, s.successes, s.failures),
        (CircuitState::Open, 2, 1, 1)
    );
    assert_eq!(bulkhead_available(name), Some(2));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(panics_at_once(false).await, Ok(5));
    assert_eq!(st(name).state, CircuitState::Closed);
}
