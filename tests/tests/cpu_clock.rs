//! The process on the CPU's clock (`set_clock_source(ClockSource::Cpu)`): the
//! choice is fixed once, a later one is refused and changes nothing, and the
//! policies that read the time on the call path (a rate limit's schedule, a
//! tripped breaker's cooldown) read it from the counter. Its own test binary: the
//! source is process-wide, and the other tests pause tokio's clock.
//!
//! Every test chooses the CPU clock first (choosing it again is not an error), so
//! they may run in any order. Nothing here waits: the checks are of what a call
//! reports right after another, far inside the intervals configured.

use std::time::Duration;

use resilience_runtime::prelude::*;
use resilience_runtime::{clock_source, set_clock_source, ClockError, ClockSource};
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

/// Chooses the CPU clock; `false` where the CPU has none (then tokio's stays, as
/// the error says).
fn cpu_clock() -> bool {
    match set_clock_source(ClockSource::Cpu) {
        Ok(()) => true,
        Err(e @ ClockError::Unavailable { .. }) => {
            assert!(e.to_string().contains("keep reading tokio's clock"), "{e}");
            assert_eq!(clock_source(), ClockSource::Tokio);
            false
        }
        Err(e) => panic!("the CPU clock could not be chosen: {e}"),
    }
}

#[test]
fn the_source_is_chosen_once_and_a_later_choice_changes_nothing() {
    if !cpu_clock() {
        return;
    }
    assert_eq!(clock_source(), ClockSource::Cpu);
    let err = set_clock_source(ClockSource::Tokio).expect_err("the source is fixed");
    assert_eq!(
        err,
        ClockError::AlreadyFixed {
            current: ClockSource::Cpu
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("already Cpu") && msg.contains("before the first call"),
        "{msg}"
    );
    assert_eq!(clock_source(), ClockSource::Cpu);
    // The source in use, again: not an error.
    assert_eq!(set_clock_source(ClockSource::Cpu), Ok(()));
}

#[test]
fn a_rate_limit_on_the_cpu_clock_grants_its_burst_then_reports_the_wait() {
    if !cpu_clock() {
        return;
    }
    let p = Resilience::builder("cpu_clock.rate")
        .no_circuit_breaker()
        .no_retry()
        .rate(Rate::new(1, Duration::from_secs(3600)))
        .burst(2)
        .build()
        .expect("valid policy");
    assert_eq!(p.call_sync(|| Ok::<u32, E>(1)), Ok(1));
    assert_eq!(p.call_sync(|| Ok::<u32, E>(2)), Ok(2));
    let wait = |r: Result<u32, E>| match r {
        Err(E::R(ResilienceError::RateLimited { retry_after, .. })) => retry_after,
        other => panic!("expected RateLimited, got {other:?}"),
    };
    // The next permit is an hour after the first one, less the moments since.
    let first = wait(p.call_sync(|| Ok::<u32, E>(3)));
    assert!(
        first > Duration::from_secs(3590) && first <= Duration::from_secs(3600),
        "{first:?}"
    );
    // A refusal takes nothing: the wait only shrinks as the counter runs on.
    let second = wait(p.call_sync(|| Ok::<u32, E>(4)));
    assert!(second <= first, "{second:?} after {first:?}");
    let s = status("cpu_clock.rate").expect("registered");
    assert_eq!((s.successes, s.rejections), (2, 2));
}

#[test]
fn a_tripped_breaker_on_the_cpu_clock_refuses_with_the_cooldown_left() {
    if !cpu_clock() {
        return;
    }
    let p = Resilience::builder("cpu_clock.breaker")
        .failure_threshold(1)
        .cooldown(Duration::from_secs(3600))
        .no_retry()
        .build()
        .expect("valid policy");
    assert_eq!(p.call_sync(|| Err::<u32, E>(E::Boom)), Err(E::Boom));
    assert_eq!(
        status("cpu_clock.breaker").expect("registered").state,
        CircuitState::Open
    );
    let mut ran = false;
    let r = p.call_sync(|| {
        ran = true;
        Ok::<u32, E>(1)
    });
    match r {
        Err(E::R(ResilienceError::CircuitOpen { retry_after, .. })) => assert!(
            retry_after > Duration::from_secs(3590) && retry_after <= Duration::from_secs(3600),
            "{retry_after:?}"
        ),
        other => panic!("expected CircuitOpen, got {other:?}"),
    }
    assert!(!ran, "an open breaker does not run the body");
}
