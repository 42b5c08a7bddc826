//! The default clock, left to itself: where tokio cannot pause and the counter
//! keeps time, the first reading starts the counter's calibration, the readings
//! for 20 ms come from the monotonic clock, and the first after switch to the
//! counter, on the same scale; otherwise the first reading fixes tokio's clock.

use std::time::{Duration, Instant};

use resilience_default_clock::{cooldown_left, counter_by_default, tripped};
use resilience_runtime::{clock_source, set_clock_source, ClockError, ClockSource};

#[test]
fn the_first_reading_fixes_the_default_and_a_breaker_keeps_its_cooldown_across_it() {
    assert_eq!(
        clock_source(),
        ClockSource::Tokio,
        "nothing read the time yet"
    );
    let p = tripped("default_clock.default");
    let mut left = cooldown_left(&p);
    if !counter_by_default() {
        assert_eq!(clock_source(), ClockSource::Tokio);
        assert_eq!(
            set_clock_source(ClockSource::Cpu),
            Err(ClockError::AlreadyFixed {
                current: ClockSource::Tokio
            })
        );
        assert!(cooldown_left(&p) <= left);
        return;
    }
    // Calls keep reading the time while the counter is calibrated; the first one
    // 20 ms after the first reading ends it. The cooldown only shrinks, across the
    // switch too (within a microsecond: the two clocks are matched at one reading).
    let began = Instant::now();
    while clock_source() == ClockSource::Tokio {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the counter was not calibrated in 10 s of calls"
        );
        let now = cooldown_left(&p);
        assert!(now <= left, "{now:?} after {left:?}");
        left = now;
    }
    assert_eq!(clock_source(), ClockSource::Cpu);
    let after = cooldown_left(&p);
    assert!(
        after <= left + Duration::from_micros(1),
        "{after:?} after {left:?}"
    );
    assert!(
        left - after < Duration::from_millis(100),
        "{after:?} after {left:?}"
    );
    // Fixed now: tokio's clock is refused, the counter's is not an error.
    assert_eq!(
        set_clock_source(ClockSource::Tokio),
        Err(ClockError::AlreadyFixed {
            current: ClockSource::Cpu
        })
    );
    assert_eq!(set_clock_source(ClockSource::Cpu), Ok(()));
}
