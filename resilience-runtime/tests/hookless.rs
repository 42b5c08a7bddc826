//! Calls whose hooks have no `into_error` (what an attribute none of whose
//! policies can refuse runs: `#[with_retry]` alone, `#[fallback]` alone): the
//! policies that refuse or time out do not apply to them, whatever the service
//! has (`Hooks::into_error`). Their first attempt takes the swift lane, so these
//! tests drive that lane, sync and async, against a service that has a breaker,
//! a bulkhead and a rate limiter.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::task::{Context, Poll, Waker};

use resilience_runtime::{breaker, CircuitState, Hooks, Policy, Rate, Resilience, ResilienceError};

#[derive(Debug, Clone, PartialEq)]
struct Boom;

/// Only the calls with `Hooks::DEFAULT` (`call`, `call_sync`) use this: a
/// rejection is a `Boom` too.
impl From<ResilienceError> for Boom {
    fn from(_: ResilienceError) -> Self {
        Boom
    }
}

const NONE: Hooks<Boom> = Hooks::NONE;

/// Polls `fut` once with a no-op waker: every body here is ready at once.
fn poll_once<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("not ready at the first poll"),
    }
}

/// A breaker that opens at the first failure, no retry.
fn tripwire(name: &str) -> Policy {
    Resilience::builder(name)
        .no_retry()
        .failure_threshold(1)
        .build()
        .unwrap()
}

#[test]
fn a_forced_open_breaker_does_not_refuse_a_call_without_into_error() {
    let p = tripwire("hookless.forced");
    breaker("hookless.forced").unwrap().force_open();
    let runs = AtomicU32::new(0);
    let sync = p.call_sync_with(&NONE, || {
        runs.fetch_add(1, SeqCst);
        Ok::<u32, Boom>(1)
    });
    let not_sync = poll_once(p.call_with(&NONE, || async {
        runs.fetch_add(1, SeqCst);
        Ok::<u32, Boom>(2)
    }));
    assert_eq!((sync, not_sync), (Ok(1), Ok(2)));
    assert_eq!(runs.load(SeqCst), 2, "both bodies ran");
    let s = p.service().status();
    assert_eq!((s.successes, s.rejections), (2, 0));
}

#[test]
fn the_breaker_does_not_record_the_failures_of_a_call_without_into_error() {
    let p = tripwire("hookless.failures");
    assert_eq!(p.call_sync_with(&NONE, || Err::<u32, _>(Boom)), Err(Boom));
    assert_eq!(
        poll_once(p.call_with(&NONE, || async { Err::<u32, _>(Boom) })),
        Err(Boom)
    );
    let b = breaker("hookless.failures").unwrap();
    assert_eq!(b.state(), CircuitState::Closed, "one failure would open it");
    assert_eq!(p.service().status().failures, 2, "counted all the same");
    // A call that the breaker applies to is recorded by it.
    assert!(p.call_sync(|| Err::<u32, _>(Boom)).is_err());
    assert_eq!(b.state(), CircuitState::Open);
}

#[test]
fn a_body_that_panics_without_into_error_is_not_recorded_by_the_breaker() {
    let p = tripwire("hookless.panics");
    let sync = catch_unwind(AssertUnwindSafe(|| {
        p.call_sync_with(&NONE, || -> Result<u32, Boom> { panic!("sync body") })
    }));
    assert!(sync.is_err(), "the panic goes on to the caller");
    let not_sync = catch_unwind(AssertUnwindSafe(|| {
        poll_once(p.call_with(&NONE, || async {
            if true {
                panic!("async body");
            }
            Ok::<u32, Boom>(1)
        }))
    }));
    assert!(not_sync.is_err(), "the panic goes on to the caller");
    let b = breaker("hookless.panics").unwrap();
    assert_eq!(b.state(), CircuitState::Closed, "one failure would open it");
    assert_eq!(
        p.service().status().failures,
        2,
        "each panic counted as a failure"
    );
}

#[test]
fn a_full_bulkhead_and_a_spent_limiter_do_not_hold_back_a_call_without_into_error() {
    let p = Resilience::builder("hookless.full")
        .no_retry()
        .no_circuit_breaker()
        .max_concurrent(1)
        .rate(Rate::per_second(1))
        .burst(1)
        .build()
        .unwrap();
    // The one slot, and the one permit, taken by a call in flight.
    let mut cx = Context::from_waker(Waker::noop());
    let mut holder = pin!(p.call(|| async {
        std::future::pending::<()>().await;
        Ok::<u32, Boom>(0)
    }));
    assert!(holder.as_mut().poll(&mut cx).is_pending());
    assert_eq!(
        p.service().bulkhead_available(),
        Some(0),
        "the slot is held"
    );
    assert!(
        p.call_sync(|| Ok::<u32, Boom>(0)).is_err(),
        "a call these policies apply to is refused"
    );
    assert_eq!(p.call_sync_with(&NONE, || Ok::<u32, Boom>(1)), Ok(1));
    assert_eq!(
        poll_once(p.call_with(&NONE, || async { Ok::<u32, Boom>(2) })),
        Ok(2)
    );
    assert_eq!(
        p.service().bulkhead_available(),
        Some(0),
        "nothing taken or given"
    );
}
