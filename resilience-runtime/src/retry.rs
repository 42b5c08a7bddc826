//! Retry delays: backoff, cap and jitter, as a pure function of the attempt number,
//! the previous delay and a random number, so tests can check them exactly.

use std::cell::Cell;
use std::time::Duration;

use crate::clock;
use crate::config::{Backoff, Jitter, RetryConfig};

/// The delay before retry number `n` (from 1), before jitter: `delay`, `delay * n`
/// or `delay * multiplier^(n-1)`, capped at `max_delay`.
pub fn backoff_delay(config: &RetryConfig, n: u32) -> Duration {
    let d = clock::dur_nanos(config.delay) as f64;
    let raw = match config.backoff {
        Backoff::Fixed => d,
        Backoff::Linear => d * f64::from(n.max(1)),
        // `n - 1` saturates at `i32::MAX` (the cap is reached long before).
        Backoff::Exponential => {
            d * config
                .multiplier
                .powi(i32::try_from(n.max(1) - 1).unwrap_or(i32::MAX))
        }
    };
    let cap = clock::dur_nanos(config.max_delay) as f64;
    // `0 * inf` is NaN: a zero delay stays zero however many retries.
    let raw = if raw.is_nan() { 0.0 } else { raw };
    Duration::from_nanos(raw.min(cap) as u64)
}

/// The jittered delay before retry number `n`, given the previous (jittered) delay and
/// a uniformly random `u64`:
/// - `none`: the backoff `d`;
/// - `full`: uniform in [0, d];
/// - `equal`: uniform in [d/2, d];
/// - `decorrelated`: uniform in [delay, 3 * previous], capped at `max_delay`.
///
/// ```
/// use resilience_runtime::{retry_delay, Backoff, Jitter, Strategy};
/// use std::time::Duration;
/// let mut c = Strategy::Balanced.preset().retry.unwrap();
/// c.backoff = Backoff::Exponential;
/// c.jitter = Jitter::Equal;
/// let d = retry_delay(&c, 3, Duration::ZERO, u64::MAX / 2);
/// assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400));
/// ```
pub fn retry_delay(config: &RetryConfig, n: u32, previous: Duration, random: u64) -> Duration {
    let d = backoff_delay(config, n);
    match config.jitter {
        Jitter::None => d,
        Jitter::Full => scale(d, random),
        Jitter::Equal => d / 2 + scale(d - d / 2, random),
        Jitter::Decorrelated => {
            let lo = config.delay;
            let hi = previous
                .max(lo)
                .saturating_mul(3)
                .min(config.max_delay)
                .max(lo);
            lo + scale(hi - lo, random)
        }
    }
}

/// `d * random / 2^64`: uniform in [0, d].
fn scale(d: Duration, random: u64) -> Duration {
    let n = clock::dur_nanos(d) as u128;
    Duration::from_nanos(((n * (u128::from(random) + 1)) >> 64) as u64)
}

/// A fast per-thread random source (xorshift64*), seeded from the clock and the
/// thread. Good enough to spread retries; not for anything secret.
pub fn thread_random() -> u64 {
    thread_local!(static STATE: Cell<u64> = const { Cell::new(0) });
    STATE.with(|s| {
        let mut x = s.get();
        if x == 0 {
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64);
            x = (seed ^ (s as *const Cell<u64> as u64).rotate_left(32)) | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(backoff: Backoff, jitter: Jitter) -> RetryConfig {
        RetryConfig {
            max_attempts: 5,
            delay: Duration::from_millis(100),
            backoff,
            multiplier: 2.0,
            max_delay: Duration::from_millis(1000),
            jitter,
            max_elapsed: None,
        }
    }

    #[test]
    fn backoffs_grow_and_cap() {
        let ms = Duration::from_millis;
        let e = config(Backoff::Exponential, Jitter::None);
        let got: Vec<_> = (1..=6).map(|n| backoff_delay(&e, n)).collect();
        assert_eq!(
            got,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        let l = config(Backoff::Linear, Jitter::None);
        assert_eq!(backoff_delay(&l, 3), ms(300));
        let f = config(Backoff::Fixed, Jitter::None);
        assert_eq!(backoff_delay(&f, 9), ms(100));
    }

    #[test]
    fn jitter_bounds_are_reached_at_the_extremes() {
        let ms = Duration::from_millis;
        let full = config(Backoff::Fixed, Jitter::Full);
        assert_eq!(retry_delay(&full, 1, ms(0), 0), Duration::from_nanos(0));
        assert_eq!(retry_delay(&full, 1, ms(0), u64::MAX), ms(100));
        let equal = config(Backoff::Fixed, Jitter::Equal);
        assert_eq!(retry_delay(&equal, 1, ms(0), 0), ms(50));
        assert_eq!(retry_delay(&equal, 1, ms(0), u64::MAX), ms(100));
        let dec = config(Backoff::Fixed, Jitter::Decorrelated);
        assert_eq!(retry_delay(&dec, 1, ms(100), 0), ms(100));
        assert_eq!(retry_delay(&dec, 1, ms(100), u64::MAX), ms(300));
        assert_eq!(retry_delay(&dec, 2, ms(900), u64::MAX), ms(1000));
    }

    #[test]
    fn thread_random_varies() {
        let a = thread_random();
        let b = thread_random();
        assert_ne!(a, b);
    }
}
