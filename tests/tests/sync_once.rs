//! A sync function under attributes without a retry runs its only attempt through
//! `Call::attempt_once_sync`, which leaves the lane by separate paths: a failure, a
//! refusal, a full bulkhead. Each must count and decide as the full path does.
//! Under a bulkhead with no rate limiter, that attempt, and the first of a sync
//! function with a retry (`Call::retry_sync`), take the swift lane's second shape
//! in a function of their own: a slot taken, the body, the slot given back; they
//! must record, count and give back their slot as the other shapes do.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use resilience_runtime::prelude::*;
use resilience_runtime::{Rate, Resilience};

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

thread_local! {
    static RUNS: Cell<u32> = const { Cell::new(0) };
}

fn runs() -> u32 {
    RUNS.with(Cell::get)
}

/// A run counted: `Boom` or 7.
fn outcome(fail: bool) -> Result<u32, E> {
    RUNS.with(|r| r.set(r.get() + 1));
    if fail {
        Err(E::Boom)
    } else {
        Ok(7)
    }
}

#[circuit_breaker(service = "sync_once.trip", failure_threshold = 2, cooldown = "1h")]
fn tripping(fail: bool) -> Result<u32, E> {
    outcome(fail)
}

#[test]
fn failures_are_recorded_and_trip_the_breaker_with_the_own_error() {
    assert_eq!(tripping(false), Ok(7));
    assert_eq!(tripping(true), Err(E::Boom));
    // The second consecutive failure trips it and is returned as is.
    assert_eq!(tripping(true), Err(E::Boom));
    let before = runs();
    let r = tripping(false);
    assert!(
        matches!(r, Err(E::R(ResilienceError::CircuitOpen { retry_after, .. }))
            if retry_after > Duration::from_secs(3500) && retry_after <= Duration::from_secs(3600)),
        "{r:?}"
    );
    assert_eq!(runs(), before, "an open breaker must not run the body");
    let s = status("sync_once.trip").expect("registered");
    assert_eq!(
        (s.calls, s.successes, s.failures, s.rejections),
        (3, 1, 2, 1)
    );
    assert_eq!(s.state, CircuitState::Open);
}

#[circuit_breaker(service = "sync_once.forced", cooldown = "45s")]
fn forced() -> Result<u32, E> {
    RUNS.with(|r| r.set(r.get() + 1));
    Ok(1)
}

#[test]
fn forced_open_refuses_with_the_cooldown_and_reset_lets_calls_through() {
    assert_eq!(forced(), Ok(1));
    breaker("sync_once.forced")
        .expect("registered")
        .force_open();
    let before = runs();
    let r = forced();
    assert!(
        matches!(&r, Err(E::R(e @ ResilienceError::CircuitOpen { retry_after, .. }))
            if *retry_after == Duration::from_secs(45) && e.service() == "sync_once.forced"),
        "{r:?}"
    );
    assert_eq!(runs(), before);
    let s = status("sync_once.forced").expect("registered");
    assert_eq!((s.successes, s.rejections), (1, 1));
    // Reset closes it and zeroes the counters.
    breaker("sync_once.forced").expect("registered").reset();
    assert_eq!(forced(), Ok(1));
    let s = status("sync_once.forced").expect("registered");
    assert_eq!((s.successes, s.rejections), (1, 0));
}

#[bulkhead(service = "sync_once.bulkhead", max_concurrent = 1)]
fn reentrant(depth: u32) -> Result<u32, E> {
    if depth == 0 {
        return Ok(0);
    }
    // The outer call holds the only slot while the inner one asks for it.
    match reentrant(depth - 1) {
        Err(E::R(ResilienceError::BulkheadFull { .. })) => Ok(depth),
        other => other,
    }
}

#[test]
fn a_full_bulkhead_refuses_and_the_slot_is_given_back() {
    assert_eq!(reentrant(1), Ok(1));
    // The slot came back: a call alone gets it.
    assert_eq!(reentrant(0), Ok(0));
    let s = status("sync_once.bulkhead").expect("registered");
    assert_eq!((s.successes, s.rejections), (2, 1));
}

/// A sync call through a rate limiter and a bulkhead takes the slot, then a permit
/// due now; a permit not due sends it off the lane with the slot given back and
/// nothing taken, so the refusal is the rate limiter's (not a leaked slot's), its
/// `retry_after` does not grow, and the permit comes exactly when it said.
#[tokio::test(start_paused = true)]
async fn a_rate_limit_refusal_on_the_sync_lane_gives_back_the_slot_and_takes_no_permit() {
    let p = Resilience::builder("sync_once.limited")
        .no_circuit_breaker()
        .no_retry()
        .rate(Rate::new(1, Duration::from_secs(1)))
        .burst(1)
        .max_concurrent(1)
        .build()
        .expect("valid policy");
    let runs = Cell::new(0);
    let call = || {
        p.call_sync(|| {
            runs.set(runs.get() + 1);
            Ok::<u32, E>(7)
        })
    };
    let limited = |r: Result<u32, E>| match r {
        Err(E::R(ResilienceError::RateLimited { retry_after, .. })) => retry_after,
        other => panic!("expected RateLimited, got {other:?}"),
    };
    assert_eq!(call(), Ok(7));
    for _ in 0..3 {
        assert_eq!(limited(call()), Duration::from_secs(1));
    }
    assert_eq!(runs.get(), 1);
    tokio::time::advance(Duration::from_millis(999)).await;
    assert_eq!(limited(call()), Duration::from_millis(1));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(call(), Ok(7));
    assert_eq!(runs.get(), 2);
    let s = status("sync_once.limited").expect("registered");
    assert_eq!((s.successes, s.rejections), (2, 4));
}

// ---- the bulkhead shape: with a breaker, a panic, a retry ----

fn available(name: &str) -> Option<u32> {
    Resilience::builder(name)
        .build()
        .expect("valid policy")
        .service()
        .bulkhead_available()
}

#[circuit_breaker(
    service = "sync_once.lane_bulkhead_breaker",
    failure_threshold = 2,
    cooldown = "1h"
)]
#[bulkhead(max_concurrent = 1)]
fn guarded(fail: bool) -> Result<u32, E> {
    outcome(fail)
}

#[test]
fn failures_behind_a_bulkhead_trip_the_breaker_and_every_slot_comes_back() {
    let name = "sync_once.lane_bulkhead_breaker";
    assert_eq!(guarded(false), Ok(7));
    assert_eq!(available(name), Some(1));
    assert_eq!(guarded(true), Err(E::Boom));
    assert_eq!(available(name), Some(1), "a failure gives its slot back");
    // The second consecutive failure trips it and is returned as is.
    assert_eq!(guarded(true), Err(E::Boom));
    let before = runs();
    let r = guarded(false);
    assert!(
        matches!(r, Err(E::R(ResilienceError::CircuitOpen { retry_after, .. }))
            if retry_after > Duration::from_secs(3500) && retry_after <= Duration::from_secs(3600)),
        "{r:?}"
    );
    assert_eq!(runs(), before, "an open breaker must not run the body");
    assert_eq!(available(name), Some(1), "a refusal takes no slot");
    let s = status(name).expect("registered");
    assert_eq!(
        (s.calls, s.successes, s.failures, s.rejections),
        (3, 1, 2, 1)
    );
}

#[bulkhead(service = "sync_once.lane_panics", max_concurrent = 2)]
fn panics(panic: bool) -> Result<u32, E> {
    if panic {
        panic!("the body panics");
    }
    Ok(1)
}

#[test]
fn a_panicking_body_is_one_failure_and_gives_its_slot_back() {
    let name = "sync_once.lane_panics";
    assert_eq!(panics(false), Ok(1));
    let r = catch_unwind(AssertUnwindSafe(|| panics(true)));
    assert!(r.is_err(), "the panic goes on to the caller");
    assert_eq!(available(name), Some(2));
    let s = status(name).expect("registered");
    assert_eq!((s.calls, s.successes, s.failures), (2, 1, 1));
    assert_eq!(panics(false), Ok(1));
}

thread_local! {
    static FAILS_LEFT: Cell<u32> = const { Cell::new(0) };
}

#[with_resilience(
    service = "sync_once.lane_retried",
    bulkhead(max_concurrent = 1),
    retry(max_attempts = 3, delay = "0ms")
)]
fn retried() -> Result<u32, E> {
    RUNS.with(|r| r.set(r.get() + 1));
    let left = FAILS_LEFT.with(Cell::get);
    if left > 0 {
        FAILS_LEFT.with(|f| f.set(left - 1));
        return Err(E::Boom);
    }
    Ok(3)
}

#[test]
fn a_retried_call_behind_a_bulkhead_runs_each_attempt_and_gives_the_slot_back() {
    let name = "sync_once.lane_retried";
    let before = runs();
    FAILS_LEFT.with(|f| f.set(2));
    assert_eq!(retried(), Ok(3));
    assert_eq!(runs(), before + 3, "two failures, then the success");
    assert_eq!(available(name), Some(1));
    let s = status(name).expect("registered");
    assert_eq!((s.successes, s.failures), (1, 2));
    // Three failures: the last one is returned after exactly three attempts.
    let before = runs();
    FAILS_LEFT.with(|f| f.set(3));
    assert_eq!(retried(), Err(E::Boom));
    assert_eq!(runs(), before + 3);
    assert_eq!(available(name), Some(1));
}

#[with_resilience(
    service = "sync_once.lane_retried_full",
    bulkhead(max_concurrent = 1),
    retry(max_attempts = 3, delay = "0ms")
)]
fn retried_reentrant(depth: u32) -> Result<u32, E> {
    RUNS.with(|r| r.set(r.get() + 1));
    if depth == 0 {
        return Ok(0);
    }
    match retried_reentrant(depth - 1) {
        Err(E::R(ResilienceError::BulkheadFull { .. })) => Ok(depth),
        other => other,
    }
}

#[test]
fn a_full_bulkhead_is_not_retried() {
    let name = "sync_once.lane_retried_full";
    let before = runs();
    assert_eq!(retried_reentrant(1), Ok(1));
    assert_eq!(
        runs(),
        before + 1,
        "the refusal ended the inner call at once"
    );
    assert_eq!(available(name), Some(1));
    let s = status(name).expect("registered");
    assert_eq!((s.successes, s.rejections), (1, 1));
}
