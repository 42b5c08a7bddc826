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
    if at >= o {
        OFFSET.saturating_add(dur_nanos(at - o))
    } else {
        OFFSET.saturating_sub(dur_nanos(o - at))
    }
}

/// Now on the shared scale.
#[inline]
pub(crate) fn now_nanos() -> Nanos {
    nanos(now())
}

#[inline]
pub(crate) fn dur_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Sleeps the current thread (sync calls wait this way).
pub(crate) fn sleep_thread(d: Duration) {
    if !d.is_zero() {
        std::thread::sleep(d);
    }
}
