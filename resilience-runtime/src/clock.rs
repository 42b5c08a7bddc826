//! Time. Every reading and every wait goes through tokio's clock, so a test that
//! pauses it (`#[tokio::test(start_paused = true)]`) drives the policies exactly;
//! outside a runtime tokio's clock is the system's monotonic clock.
//!
//! Shared state keeps instants as `u64` nanoseconds on a private scale (see
//! [`Nanos`]) so they fit in atomics.

use std::sync::OnceLock;
use std::time::Duration;

pub(crate) use tokio::time::Instant;

/// An instant as nanoseconds on the process-wide scale: `OFFSET` is the first
/// reading, so instants earlier than it (another test's paused clock) stay
/// representable and ordered.
pub(crate) type Nanos = u64;

const OFFSET: u64 = 1 << 62;

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Now, on tokio's clock.
#[inline]
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// `at` on the shared scale.
#[inline]
pub(crate) fn nanos(at: Instant) -> Nanos {
    let o = origin();
    // One subtraction of the clock's instants (a comparison first would be two).
    match at.checked_duration_since(o) {
        Some(d) => OFFSET.saturating_add(dur_nanos(d)),
        None => OFFSET.saturating_sub(dur_nanos(o.saturating_duration_since(at))),
    }
}

/// Now on the shared scale.
#[inline]
pub(crate) fn now_nanos() -> Nanos {
    nanos(now())
}

#[inline]
pub(crate) fn dur_nanos(d: Duration) -> u64 {
    // In 64-bit arithmetic (`as_nanos` is 128-bit), saturating at `u64::MAX`.
    d.as_secs()
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(u64::from(d.subsec_nanos())))
        .unwrap_or(u64::MAX)
}

/// Sleeps the current thread (sync calls wait this way).
pub(crate) fn sleep_thread(d: Duration) {
    if !d.is_zero() {
        std::thread::sleep(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dur_nanos_is_exact_up_to_u64_max_and_saturates_above() {
        assert_eq!(dur_nanos(Duration::ZERO), 0);
        assert_eq!(dur_nanos(Duration::new(1, 500_000_000)), 1_500_000_000);
        assert_eq!(dur_nanos(Duration::from_nanos(u64::MAX)), u64::MAX);
        let above = Duration::from_nanos(u64::MAX) + Duration::from_nanos(1);
        assert_eq!(dur_nanos(above), u64::MAX);
        assert_eq!(dur_nanos(Duration::MAX), u64::MAX);
    }

    #[test]
    fn nanos_keeps_the_order_and_distance_of_instants_on_both_sides_of_the_origin() {
        let o = origin();
        let d = Duration::from_millis(1500);
        assert_eq!(nanos(o), OFFSET);
        assert_eq!(nanos(o + d), OFFSET + 1_500_000_000);
        if let Some(before) = o.checked_sub(d) {
            assert_eq!(nanos(before), OFFSET - 1_500_000_000);
        }
    }
}
