//! Choosing the CPU's clock while the default's counter is calibrated waits for
//! the calibration to end, then reads the counter.

use std::time::Duration;

use resilience_default_clock::{cooldown_left, counter_by_default, tripped};
use resilience_runtime::{clock_source, set_clock_source, ClockError, ClockSource};

#[test]
fn choosing_the_counter_during_the_calibration_ends_it() {
    let p = tripped("default_clock.choose_cpu");
    let before = cooldown_left(&p);
    if !counter_by_default() {
        assert_eq!(
            set_clock_source(ClockSource::Cpu),
            Err(ClockError::AlreadyFixed {
                current: ClockSource::Tokio
            })
        );
        return;
    }
    assert_eq!(set_clock_source(ClockSource::Cpu), Ok(()));
    assert_eq!(clock_source(), ClockSource::Cpu);
    // The call waited out the rest of the 20 ms; the cooldown ran on meanwhile,
    // on one scale.
    let after = cooldown_left(&p);
    assert!(after < before, "{after:?} after {before:?}");
    assert!(
        before - after < Duration::from_secs(1),
        "{after:?} after {before:?}"
    );
}
