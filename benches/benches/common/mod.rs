//! What every bench target shares: the bodies' error type, the timing loop and
//! the one-poll driver.

#![allow(dead_code)] // each bench target uses its own part

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use resilience_runtime::{Policy, ResilienceError};

pub mod floor;
pub mod permit;

/// The error type of every body: carries a rejection for ours, is a
/// `std::error::Error` for tower's `BoxError`.
#[derive(Debug, Clone)]
pub struct BenchError;

impl From<ResilienceError> for BenchError {
    fn from(_: ResilienceError) -> Self {
        BenchError
    }
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bench error")
    }
}

impl std::error::Error for BenchError {}

/// Polls `fut` once with a no-op waker; every body in this suite is ready at its first
/// poll, so the whole call completes here.
#[inline(always)]
pub fn poll_once<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a benched future was not ready at its first poll"),
    }
}

/// Shuffles `v` in a fixed order (a Fisher-Yates shuffle on a fixed xorshift
/// sequence), the same in every run and bench target.
pub fn shuffle<T>(v: &mut [T]) {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

/// The timing loop of every item, ours and the peers' alike: `iters` runs of the
/// routine, each result kept alive by passing a reference to it through
/// `std::hint::black_box`.
///
/// Not criterion's `Bencher::iter`, nor `black_box` of the result by value: both
/// store the result and read it back (criterion's default `black_box` is a
/// `read_volatile`), and a `Result<u32, _>` returned in two registers is stored as
/// two 4-byte halves and read back as one 8-byte load, which the CPU cannot forward
/// from its store buffer. That stall added 5-7 ns to every iteration of such a
/// routine on the benchmark machine (the floor row: 8.0 ns through `iter`, 6.2 ns
/// through a by-value `black_box`, 0.8 ns through this loop) and hit only the
/// routines whose result has that shape, so it skewed the ratios.
pub trait Tight {
    fn tight<O>(&mut self, routine: impl FnMut() -> O);
}

/// Keeps a routine's result alive without reading it back (see [`Tight`]).
#[inline(always)]
pub fn keep<T>(out: T) {
    black_box(&out);
}

impl Tight for criterion::Bencher<'_> {
    #[inline(always)]
    fn tight<O>(&mut self, mut routine: impl FnMut() -> O) {
        self.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                keep(routine());
            }
            start.elapsed()
        });
    }
}

#[inline(always)]
pub fn ok_sync() -> Result<u32, BenchError> {
    Ok(black_box(1))
}

pub fn build(b: resilience_runtime::ResilienceBuilder) -> Policy {
    b.build().expect("valid bench policy")
}

/// A breaker that really tripped (Open with an hour's cooldown, not ForcedOpen):
/// its rejection reads the clock, as recloser's does.
pub fn tripped(service: &'static str) -> Policy {
    let p = build(
        resilience_runtime::Resilience::builder(service)
            .no_retry()
            .failure_threshold(1)
            .cooldown(std::time::Duration::from_secs(3600)),
    );
    let _ = p.call_sync(|| Err::<u32, _>(BenchError));
    assert!(p.call_sync(ok_sync).is_err(), "tripped breaker must reject");
    p
}

/// recloser, opened by failures, with an hour's wait.
pub fn recloser_open() -> recloser::Recloser {
    let rc = recloser::Recloser::custom()
        .error_rate(0.5)
        .closed_len(2)
        .open_wait(std::time::Duration::from_secs(3600))
        .build();
    for _ in 0..4 {
        let _ = rc.call(|| Err::<u32, _>(BenchError));
    }
    assert!(
        matches!(rc.call(ok_sync), Err(recloser::Error::Rejected)),
        "recloser must be open"
    );
    rc
}

/// One permit per nanosecond, burst 1e9: every permit in a bench is due now.
pub const PERMITS_PER_SECOND: u32 = 1_000_000_000;

/// A policy with only a rate limiter of [`PERMITS_PER_SECOND`].
pub fn rate_limited(service: &'static str) -> Policy {
    build(
        resilience_runtime::Resilience::builder(service)
            .no_circuit_breaker()
            .no_retry()
            .rate(resilience_runtime::Rate::new(
                PERMITS_PER_SECOND,
                std::time::Duration::from_secs(1),
            )),
    )
}

/// The default clock, settled: where tokio cannot pause (this crate builds it
/// without `test-util`, as a production build does) and the CPU's counter keeps
/// time, the process's first reading starts the counter's 20 ms calibration, and
/// readings come from the monotonic clock until it ends. Calls through a rate limit
/// (one reading each) until the source is the counter or a second has passed, so
/// the rows after measure what a process that has run for a while reads; returns
/// the source. Not every bench target uses it.
#[allow(dead_code)]
pub fn settled_default_clock() -> resilience_runtime::ClockSource {
    use resilience_runtime::{clock_source, ClockSource};
    let p = rate_limited("bench.clock.settle");
    let began = Instant::now();
    while clock_source() != ClockSource::Cpu && began.elapsed() < std::time::Duration::from_secs(1)
    {
        let _ = p.call_sync(ok_sync);
    }
    clock_source()
}

/// governor's direct limiter of [`PERMITS_PER_SECOND`].
pub fn governor_direct() -> governor::DefaultDirectRateLimiter {
    governor::RateLimiter::direct(governor::Quota::per_second(
        std::num::NonZeroU32::new(PERMITS_PER_SECOND).expect("non-zero"),
    ))
}

/// governor's keyed limiter of [`PERMITS_PER_SECOND`] a key, every one of `keys`
/// checked in once (in the order given), so each has its state.
pub fn governor_keyed<'a>(
    keys: impl IntoIterator<Item = &'a String>,
) -> governor::DefaultKeyedRateLimiter<String> {
    let keys: Vec<&String> = keys.into_iter().collect();
    // Sized for its keys up front: growing, the map would free its smaller tables,
    // and what a process frees, the next allocations fill: the other side's keys,
    // made after these, would then not lie one after another as in a process of
    // their own (see `compare.rs`, the 100,000-key group).
    let gov = governor::RateLimiter::new(
        governor::Quota::per_second(
            std::num::NonZeroU32::new(PERMITS_PER_SECOND).expect("non-zero"),
        ),
        governor::state::keyed::DashMapStateStore::with_capacity(keys.len()),
        governor::clock::DefaultClock::default(),
    );
    for k in keys {
        gov.check_key(k).expect("permit");
    }
    gov
}

/// The count in the environment variable `name`, or `default` when it is unset
/// (the examples' sizes).
pub fn count_from_env(name: &str, default: usize) -> Result<usize, String> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(s) => match s.parse() {
            Ok(v) if v > 0 => Ok(v),
            _ => Err(format!("{name} must be a count above zero, not `{s}`")),
        },
    }
}

/// Prints each name's median time of its rounds, with the fastest and slowest
/// (the examples that time rows in rounds in one process).
pub fn print_medians(names: &[&str], times: Vec<Vec<f64>>) {
    for (name, mut t) in names.iter().zip(times) {
        t.sort_by(f64::total_cmp);
        println!(
            "{name:28} median {:7.2} ns  [{:.2}-{:.2}]",
            t[t.len() / 2],
            t[0],
            t[t.len() - 1]
        );
    }
}
