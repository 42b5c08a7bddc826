//! Choosing tokio's clock while the default's counter is calibrated keeps tokio's
//! clock for good.

use std::time::{Duration, Instant};

use resilience_default_clock::{cooldown_left, counter_by_default, tripped};
use resilience_runtime::{clock_source, set_clock_source, ClockError, ClockSource};

#[test]
fn choosing_tokio_during_the_calibration_keeps_tokio() {
    let p = tripped("default_clock.keep_tokio");
    // Whether the counter was being calibrated or tokio's clock was the default,
    // tokio's is the one in use: not an error.
    assert_eq!(set_clock_source(ClockSource::Tokio), Ok(()));
    assert_eq!(clock_source(), ClockSource::Tokio);
    assert_eq!(
        set_clock_source(ClockSource::Cpu),
        Err(ClockError::AlreadyFixed {
            current: ClockSource::Tokio
        })
    );
    if counter_by_default() {
        // Past the calibration's 20 ms, calls still read tokio's clock.
        let began = Instant::now();
        let mut left = cooldown_left(&p);
        while began.elapsed() < Duration::from_millis(40) {
            let now = cooldown_left(&p);
            assert!(now <= left, "{now:?} after {left:?}");
            left = now;
        }
        assert_eq!(clock_source(), ClockSource::Tokio);
    }
}
