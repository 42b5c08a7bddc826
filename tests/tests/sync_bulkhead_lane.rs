//! A sync function under a bulkhead (with a breaker or none, no rate limiter) takes
//! the swift lane's second shape inline, with or without a retry
//! (`Call::attempt_once_sync`, `Call::retry_sync`): a slot taken, the body, the
//! slot given back, and every other way (a failure, a refusal, a full bulkhead, a
//! panic) left to the paths the other shapes take. Each must count, record and
//! give back its slot as the full path does.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use resilience_runtime::prelude::*;
use resilience_runtime::Resilience;

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

fn ran() {
    RUNS.with(|r| r.set(r.get() + 1));
}

fn st(name: &str) -> ServiceStatus {
    status(name).expect("registered")
}

fn available(name: &str) -> Option<u32> {
    Resilience::builder(name)
        .build()
        .expect("valid policy")
        .service()
        .bulkhead_available()
}

#[circuit_breaker(
    service = "sync_lane.bulkhead_breaker",
    failure_threshold = 2,
    cooldown = "1h"
)]
#[bulkhead(max_concurrent = 1)]
fn guarded(fail: bool) -> Result<u32, E> {
    ran();
    if fail {
        Err(E::Boom)
    } else {
        Ok(7)
    }
}

#[test]
fn failures_behind_a_bulkhead_trip_the_breaker_and_every_slot_comes_back() {
    let name = "sync_lane.bulkhead_breaker";
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
    let s = st(name);
    assert_eq!(
        (s.calls, s.successes, s.failures, s.rejections),
        (3, 1, 2, 1)
    );
}

#[bulkhead(service = "sync_lane.reentrant", max_concurrent = 1)]
fn reentrant(depth: u32) -> Result<u32, E> {
    ran();
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
fn a_full_bulkhead_refuses_without_running_the_body() {
    let name = "sync_lane.reentrant";
    let before = runs();
    assert_eq!(reentrant(1), Ok(1));
    assert_eq!(runs(), before + 1, "the refused call's body never ran");
    assert_eq!(available(name), Some(1));
    let s = st(name);
    assert_eq!((s.successes, s.rejections), (1, 1));
}

#[bulkhead(service = "sync_lane.panics", max_concurrent = 2)]
fn panics(panic: bool) -> Result<u32, E> {
    if panic {
        panic!("the body panics");
    }
    Ok(1)
}

#[test]
fn a_panicking_body_is_one_failure_and_gives_its_slot_back() {
    let name = "sync_lane.panics";
    assert_eq!(panics(false), Ok(1));
    let r = catch_unwind(AssertUnwindSafe(|| panics(true)));
    assert!(r.is_err(), "the panic goes on to the caller");
    assert_eq!(available(name), Some(2));
    let s = st(name);
    assert_eq!((s.calls, s.successes, s.failures), (2, 1, 1));
    assert_eq!(panics(false), Ok(1));
}

thread_local! {
    static FAILS_LEFT: Cell<u32> = const { Cell::new(0) };
}

#[with_resilience(
    service = "sync_lane.retried",
    bulkhead(max_concurrent = 1),
    retry(max_attempts = 3, delay = "0ms")
)]
fn retried() -> Result<u32, E> {
    ran();
    let left = FAILS_LEFT.with(Cell::get);
    if left > 0 {
        FAILS_LEFT.with(|f| f.set(left - 1));
        return Err(E::Boom);
    }
    Ok(3)
}

#[test]
fn a_retried_call_behind_a_bulkhead_runs_each_attempt_and_gives_the_slot_back() {
    let name = "sync_lane.retried";
    let before = runs();
    FAILS_LEFT.with(|f| f.set(2));
    assert_eq!(retried(), Ok(3));
    assert_eq!(runs(), before + 3, "two failures, then the success");
    assert_eq!(available(name), Some(1));
    let s = st(name);
    assert_eq!((s.successes, s.failures), (1, 2));
    // Three failures: the last one is returned after exactly three attempts.
    let before = runs();
    FAILS_LEFT.with(|f| f.set(3));
    assert_eq!(retried(), Err(E::Boom));
    assert_eq!(runs(), before + 3);
    assert_eq!(available(name), Some(1));
}

#[with_resilience(
    service = "sync_lane.retried_full",
    bulkhead(max_concurrent = 1),
    retry(max_attempts = 3, delay = "0ms")
)]
fn retried_reentrant(depth: u32) -> Result<u32, E> {
    ran();
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
    let name = "sync_lane.retried_full";
    let before = runs();
    assert_eq!(retried_reentrant(1), Ok(1));
    assert_eq!(
        runs(),
        before + 1,
        "the refusal ended the inner call at once"
    );
    assert_eq!(available(name), Some(1));
    let s = st(name);
    assert_eq!((s.successes, s.rejections), (1, 1));
}
