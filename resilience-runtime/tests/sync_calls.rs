//! `Policy::call_sync` leaves its lane (the first attempt through a closed breaker
//! with no clock-bound policy) by separate paths: a failure that is retried, a
//! refusal, a full bulkhead, a panic. Each must still count and decide exactly as
//! the full path does.

mod captured;
use captured::Captured;

use std::cell::Cell;
use std::time::Duration;

use resilience_runtime::{breaker, status, CircuitState, Resilience, ResilienceError};

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

#[test]
fn a_failed_lane_attempt_is_recorded_and_retried_through_the_full_path() {
    let p = Resilience::builder("sync.lane.retry")
        .failure_threshold(5)
        .max_attempts(3)
        .delay(Duration::ZERO)
        .build()
        .expect("valid policy");
    let runs = Cell::new(0u32);
    let r = p.call_sync(|| {
        runs.set(runs.get() + 1);
        if runs.get() == 1 {
            Err(E::Boom)
        } else {
            Ok(runs.get())
        }
    });
    assert_eq!(r, Ok(2));
    assert_eq!(runs.get(), 2);
    let s = status("sync.lane.retry").expect("registered");
    assert_eq!((s.calls, s.successes, s.failures), (2, 1, 1));
    assert_eq!(s.retries, 1);

    // Always failing: exactly max_attempts runs, the last error returned.
    runs.set(0);
    let r: Result<u32, E> = p.call_sync(|| {
        runs.set(runs.get() + 1);
        Err(E::Boom)
    });
    assert_eq!(r, Err(E::Boom));
    assert_eq!(runs.get(), 3);
    let s = status("sync.lane.retry").expect("registered");
    assert_eq!((s.successes, s.failures, s.retries), (1, 4, 3));
}

#[test]
fn a_failed_lane_attempt_without_retry_trips_a_consecutive_breaker() {
    let p = Resilience::builder("sync.lane.trip")
        .no_retry()
        .failure_threshold(2)
        .cooldown(Duration::from_secs(3600))
        .build()
        .expect("valid policy");
    assert_eq!(p.call_sync(|| Err::<(), _>(E::Boom)), Err(E::Boom));
    // The tripping call returns its own error.
    assert_eq!(p.call_sync(|| Err::<(), _>(E::Boom)), Err(E::Boom));
    let ran = Cell::new(false);
    let r = p.call_sync(|| {
        ran.set(true);
        Ok(())
    });
    assert!(
        matches!(r, Err(E::R(ResilienceError::CircuitOpen { .. }))),
        "{r:?}"
    );
    assert!(!ran.get(), "an open breaker must not run the body");
    let s = status("sync.lane.trip").expect("registered");
    assert_eq!((s.failures, s.rejections), (2, 1));
}

#[test]
fn a_forced_open_breaker_refuses_without_running_the_body_and_counts_it() {
    let p = Resilience::builder("sync.lane.forced")
        .no_retry()
        .failure_threshold(5)
        .cooldown(Duration::from_secs(7))
        .build()
        .expect("valid policy");
    breaker("sync.lane.forced")
        .expect("registered")
        .force_open();
    let ran = Cell::new(false);
    let r = p.call_sync(|| {
        ran.set(true);
        Ok(())
    });
    match r {
        Err(E::R(ResilienceError::CircuitOpen {
            service,
            retry_after,
            ..
        })) => {
            assert_eq!(service, "sync.lane.forced");
            assert_eq!(retry_after, Duration::from_secs(7));
        }
        other => panic!("expected CircuitOpen, got {other:?}"),
    }
    assert!(!ran.get());
    let s = status("sync.lane.forced").expect("registered");
    assert_eq!((s.calls, s.rejections), (0, 1));
}

#[test]
fn a_full_bulkhead_sends_the_call_off_the_lane_and_rejects_it() {
    let p = Resilience::builder("sync.lane.full")
        .no_circuit_breaker()
        .no_retry()
        .max_concurrent(1)
        .bulkhead_max_wait(Duration::ZERO)
        .build()
        .expect("valid policy");
    let inner_ran = Cell::new(false);
    let r = p.call_sync(|| {
        let inner = p.call_sync(|| {
            inner_ran.set(true);
            Ok(1u32)
        });
        Ok::<_, E>(inner)
    });
    let inner = r.expect("the outer call succeeds");
    assert!(
        matches!(inner, Err(E::R(ResilienceError::BulkheadFull { .. }))),
        "{inner:?}"
    );
    assert!(!inner_ran.get());
    // The outer call left: the slot is free again.
    assert_eq!(p.call_sync(|| Ok::<_, E>(2)), Ok(2));
    let s = status("sync.lane.full").expect("registered");
    assert_eq!((s.successes, s.rejections), (2, 1));
}

#[test]
fn a_panicking_lane_body_is_a_failure_and_frees_its_bulkhead_slot() {
    let p = Resilience::builder("sync.lane.panic")
        .failure_threshold(5)
        .no_retry()
        .max_concurrent(1)
        .bulkhead_max_wait(Duration::ZERO)
        .build()
        .expect("valid policy");
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        p.call_sync(|| -> Result<(), E> { panic!("body panics") })
    }));
    assert!(caught.is_err());
    let s = status("sync.lane.panic").expect("registered");
    assert_eq!(s.failures, 1);
    assert_eq!(p.call_sync(|| Ok::<_, E>(3)), Ok(3));
}

#[test]
fn a_success_after_a_failure_resets_a_consecutive_run() {
    // Threshold 2: F S F leaves it closed only if the success reset the run.
    let p = Resilience::builder("sync.lane.reset")
        .no_retry()
        .failure_threshold(2)
        .build()
        .expect("valid policy");
    assert_eq!(p.call_sync(|| Err::<u8, E>(E::Boom)), Err(E::Boom));
    assert_eq!(p.call_sync(|| Ok::<u8, E>(1)), Ok(1));
    assert_eq!(p.call_sync(|| Err::<u8, E>(E::Boom)), Err(E::Boom));
    assert_eq!(
        status("sync.lane.reset").expect("registered").state,
        CircuitState::Closed
    );
    // Two in a row trip it; the tripping call returns its own error.
    assert_eq!(p.call_sync(|| Err::<u8, E>(E::Boom)), Err(E::Boom));
    assert_eq!(
        status("sync.lane.reset").expect("registered").state,
        CircuitState::Open
    );
}

#[test]
fn a_tripped_breaker_refuses_with_the_cooldown_left() {
    let p = Resilience::builder("sync.lane.tripped")
        .no_retry()
        .failure_threshold(1)
        .cooldown(Duration::from_secs(3600))
        .build()
        .expect("valid policy");
    assert_eq!(p.call_sync(|| Err::<u8, E>(E::Boom)), Err(E::Boom));
    let ran = Cell::new(false);
    match p.call_sync(|| {
        ran.set(true);
        Ok::<u8, E>(1)
    }) {
        Err(E::R(ResilienceError::CircuitOpen { retry_after, .. })) => {
            assert!(retry_after > Duration::ZERO);
            assert!(retry_after <= Duration::from_secs(3600));
        }
        other => panic!("expected CircuitOpen, got {other:?}"),
    }
    assert!(!ran.get());
    let s = status("sync.lane.tripped").expect("registered");
    assert_eq!((s.calls, s.failures, s.rejections), (1, 1, 1));
}

/// Runs `f` under a subscriber that records every level; returns what it wrote.
fn traced(f: impl FnOnce()) -> String {
    let logs = Captured::default();
    tracing::subscriber::with_default(logs.subscriber_at_trace(), f);
    logs.text()
}

#[test]
fn a_lane_success_is_traced_when_trace_is_on() {
    let p = Resilience::builder("sync.lane.traced")
        .no_retry()
        .failure_threshold(5)
        .build()
        .expect("valid policy");
    // A first call on this thread outside the subscriber, so the traced one is a
    // lane call on a thread that has its counter line.
    assert_eq!(p.call_sync(|| Ok::<u8, E>(0)), Ok(0));
    let text = traced(|| assert_eq!(p.call_sync(|| Ok::<u8, E>(1)), Ok(1)));
    assert!(
        text.contains("call succeeded") && text.contains("sync.lane.traced"),
        "{text}"
    );
    assert_eq!(status("sync.lane.traced").expect("registered").successes, 2);
}

#[test]
fn an_async_lane_success_is_traced_when_trace_is_on() {
    let p = Resilience::builder("async.lane.traced")
        .no_retry()
        .failure_threshold(5)
        .build()
        .expect("valid policy");
    let poll = |p: &resilience_runtime::Policy, v: u8| {
        let fut = std::pin::pin!(p.call(|| async move { Ok::<u8, E>(v) }));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::future::Future::poll(fut, &mut cx) {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => panic!("a ready body completes at its first poll"),
        }
    };
    assert_eq!(poll(&p, 0), Ok(0));
    let text = traced(|| assert_eq!(poll(&p, 1), Ok(1)));
    assert!(
        text.contains("call succeeded") && text.contains("async.lane.traced"),
        "{text}"
    );
    assert_eq!(
        status("async.lane.traced").expect("registered").successes,
        2
    );
}
