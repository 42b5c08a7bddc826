//! A sync function under attributes without a retry runs its only attempt through
//! `Call::attempt_once_sync`, which leaves the lane by separate paths: a failure, a
//! refusal, a full bulkhead. Each must count and decide as the full path does.

use std::cell::Cell;
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

#[circuit_breaker(service = "sync_once.trip", failure_threshold = 2, cooldown = "1h")]
fn tripping(fail: bool) -> Result<u32, E> {
    RUNS.with(|r| r.set(r.get() + 1));
    if fail {
        Err(E::Boom)
    } else {
        Ok(7)
    }
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
