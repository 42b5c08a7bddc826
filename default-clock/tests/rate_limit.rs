//! A rate limit whose permits are taken while the default clock settles: where the
//! counter becomes the source, the limiter's schedule moves into the counter's
//! ticks at the first call after, and keeps the permits it had handed out. Each
//! refusal says when the next permit is due; none comes earlier, before the switch
//! or after it, and over the whole run no more are granted than the rate allows.
//! Once the schedule is in ticks, a permit and a refusal allocate nothing.

use std::time::{Duration, Instant};

use resilience_default_clock::{counter_by_default, E};
use resilience_runtime::{clock_source, ClockSource, Policy, Rate, Resilience, ResilienceError};

#[path = "../../resilience-runtime/tests/counting/mod.rs"]
mod counting;

const PER_SECOND: u32 = 20;
const INTERVAL: Duration = Duration::from_millis(50);
const BURST: u32 = 3;
/// How far the counter and the monotonic clock may disagree (they are matched at
/// one reading when the calibration ends).
const SLACK: Duration = Duration::from_millis(1);

#[test]
fn permits_keep_their_schedule_across_the_switch_to_the_counter() {
    let p = Resilience::builder("default_clock.rate")
        .no_circuit_breaker()
        .no_retry()
        .rate(Rate::new(PER_SECOND, Duration::from_secs(1)))
        .burst(BURST)
        .build()
        .expect("valid policy");
    let began = Instant::now();
    // The burst, from the process's first reading of the time.
    for i in 0..BURST {
        assert_eq!(
            p.call_sync(|| Ok::<_, E>(i)),
            Ok(i),
            "permit {i} of the burst"
        );
    }
    let mut granted = BURST;
    // The earliest a permit may come, from the refusals since the last one.
    let mut due: Option<Instant> = None;
    let (mut refusals, mut settled_permits) = (0u32, 0u32);
    while settled_permits < 2 {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "no two permits after the clock settled in 10 s"
        );
        let settled = !counter_by_default() || clock_source() == ClockSource::Cpu;
        let start = Instant::now();
        let r = p.call_sync(|| Ok::<_, E>(()));
        let end = Instant::now();
        match r {
            Ok(()) => {
                granted += 1;
                if let Some(due) = due.take() {
                    assert!(
                        end + SLACK >= due,
                        "a permit came {:?} before a refusal said it would",
                        due - end
                    );
                }
                settled_permits += u32::from(settled);
            }
            Err(E::R(ResilienceError::RateLimited { retry_after, .. })) => {
                refusals += 1;
                assert!(
                    !retry_after.is_zero() && retry_after <= INTERVAL,
                    "retry_after {retry_after:?}, with a permit every {INTERVAL:?}"
                );
                due = due.max(Some(start + retry_after));
            }
            other => panic!("expected a permit or RateLimited, got {other:?}"),
        }
    }
    assert!(refusals > 0, "the limiter refused nothing");
    // Generic cell rate: in `t`, at most `t / T + burst` permits.
    let elapsed = began.elapsed();
    let allowed = BURST + u32::try_from(elapsed.as_nanos() / INTERVAL.as_nanos()).unwrap();
    assert!(
        granted <= allowed,
        "{granted} permits in {elapsed:?}, at most {allowed} allowed"
    );
    if counter_by_default() {
        assert_eq!(clock_source(), ClockSource::Cpu);
    }
}

/// A policy with only a rate limit, of `rate`.
fn limited(service: &str, rate: Rate) -> Policy {
    Resilience::builder(service)
        .no_circuit_breaker()
        .no_retry()
        .rate(rate)
        .build()
        .expect("valid policy")
}

/// Calls `p` until the clock has settled (the counter, where it is the default),
/// then once more, which moves its schedule into ticks.
fn settle(p: &Policy) {
    let began = Instant::now();
    while counter_by_default() && clock_source() != ClockSource::Cpu {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the counter was not calibrated in 10 s of calls"
        );
        let _ = p.call_sync(|| Ok::<_, E>(()));
    }
    let _ = p.call_sync(|| Ok::<_, E>(()));
}

#[test]
fn a_permit_and_a_refusal_on_a_schedule_in_ticks_allocate_nothing() {
    const N: u64 = 1_000;
    let open = limited(
        "default_clock.rate.open",
        Rate::new(1_000_000_000, Duration::from_secs(1)),
    );
    settle(&open);
    let (n, ()) = counting::allocations(|| {
        for i in 0..N {
            assert_eq!(open.call_sync(|| Ok::<_, E>(i)), Ok(i));
        }
    });
    assert_eq!(n, 0, "{n} allocations in {N} permits");

    let shut = limited(
        "default_clock.rate.shut",
        Rate::new(1, Duration::from_secs(3_600)),
    );
    settle(&shut);
    let (n, ()) = counting::allocations(|| {
        for _ in 0..N {
            let r = shut.call_sync(|| Ok::<_, E>(()));
            assert!(
                matches!(r, Err(E::R(ResilienceError::RateLimited { .. }))),
                "{r:?}"
            );
        }
    });
    assert_eq!(n, 0, "{n} allocations in {N} refusals");
}
