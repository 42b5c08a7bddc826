//! The floor under the rate limiters' rows: the least an exact rate-limit permit
//! can be. It must read the time (a permit granted on a stale reading lets a
//! bucket that filled since then grant more than its rate), and a limiter shared
//! by threads must move its state on with one atomic read-modify-write. So: the
//! CPU's counter read, then one compare-and-swap of a GCRA state (the theoretical
//! arrival time moved on by one emission interval), in the counter's ticks, with
//! no scaling, and nothing else. Used by the bench's floor row and by the example
//! `rate_floor`.

use std::sync::atomic::{
    AtomicU64,
    Ordering::{AcqRel, Relaxed},
};

/// The GCRA state: the theoretical arrival time of the next permit, in ticks.
static TAT: AtomicU64 = AtomicU64::new(0);
/// One tick a permit, and a burst that is never used up: every call is granted,
/// as in the limiters' rows.
const T: u64 = 1;
const TAU: u64 = u64::MAX / 4;

/// One permit, granted or not.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn permit() -> bool {
    // SAFETY: `rdtsc` is part of x86_64.
    let now = unsafe { std::arch::x86_64::_rdtsc() };
    let mut tat = TAT.load(Relaxed);
    loop {
        let start = tat.max(now);
        if start - now > TAU {
            return false;
        }
        match TAT.compare_exchange_weak(tat, start + T, AcqRel, Relaxed) {
            Ok(_) => return true,
            Err(seen) => tat = seen,
        }
    }
}
