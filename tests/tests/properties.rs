//! Properties of the retry delays, `max_elapsed` and the rate limiter, checked with
//! proptest over random settings. Time-dependent properties run on tokio's paused
//! clock with whole-millisecond durations, so every instant observed is exact.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config;
use resilience_runtime::{
    backoff_delay, retry_delay, Backoff, Jitter, Rate, Resilience, ResilienceError, RetryConfig,
};
use tokio::time::Instant;

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

fn config(cases: u32) -> Config {
    Config {
        cases,
        // Only the four test files may be created: no regression files.
        failure_persistence: None,
        ..Config::default()
    }
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// A fresh service name per proptest case.
fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}#{}", N.fetch_add(1, SeqCst))
}

fn backoff_kind() -> impl Strategy<Value = Backoff> {
    prop_oneof![
        Just(Backoff::Fixed),
        Just(Backoff::Linear),
        Just(Backoff::Exponential)
    ]
}

fn jitter_kind() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        Just(Jitter::Decorrelated)
    ]
}

const MS: u64 = 1_000_000;

/// delay in [1ms, 1s], multiplier in [1, 4], max_delay >= delay (up to 1s + 60s).
fn retry_config() -> impl Strategy<Value = RetryConfig> {
    (
        MS..=1_000 * MS,
        1.0f64..=4.0,
        0u64..=60_000 * MS,
        backoff_kind(),
        jitter_kind(),
        1u32..=10,
    )
        .prop_map(
            |(delay, multiplier, extra, backoff, jitter, max_attempts)| RetryConfig {
                max_attempts,
                delay: Duration::from_nanos(delay),
                backoff,
                multiplier,
                max_delay: Duration::from_nanos(delay + extra),
                jitter,
                max_elapsed: None,
            },
        )
}

/// Retry numbers: mostly small, sometimes anything a `u32` holds.
fn retry_number() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 1u32..=40, 1 => any::<u32>()]
}

/// The backoff before jitter, computed exactly (u128 nanoseconds, exponent by
/// squaring in f64 only for the exponential kind), capped at `max_delay`.
fn expected_backoff(c: &RetryConfig, n: u32) -> (u128, u128) {
    let d = c.delay.as_nanos();
    let cap = c.max_delay.as_nanos();
    let n = u128::from(n.max(1));
    match c.backoff {
        Backoff::Fixed => (d.min(cap), d.min(cap)),
        Backoff::Linear => ((d * n).min(cap), (d * n).min(cap)),
        Backoff::Exponential => {
            // f64 rounding: accept a relative error of 1e-9 either way.
            let exact = d as f64 * c.multiplier.powf((n - 1) as f64);
            let lo = (exact * (1.0 - 1e-9)).min(cap as f64) as u128;
            let hi = (exact * (1.0 + 1e-9)).min(cap as f64).ceil() as u128;
            (lo.min(cap), hi.min(cap))
        }
    }
}

proptest! {
    #![proptest_config(config(2048))]

    /// (a) Every delay is within its jitter kind's bounds and never above `max_delay`.
    #[test]
    fn retry_delays_stay_within_their_jitter_bounds(
        c in retry_config(),
        n in retry_number(),
        prev_frac in 0.0f64..=1.0,
        random in any::<u64>(),
    ) {
        let delay = c.delay.as_nanos();
        let max = c.max_delay.as_nanos();
        // prev >= delay (a previous decorrelated delay is at least `delay`), <= max.
        let prev = Duration::from_nanos((delay as f64 + (max - delay) as f64 * prev_frac) as u64)
            .clamp(c.delay, c.max_delay);

        let b = backoff_delay(&c, n).as_nanos();
        let (lo, hi) = expected_backoff(&c, n);
        prop_assert!(lo <= b && b <= hi, "backoff {b} not in [{lo}, {hi}] for {c:?} n={n}");
        prop_assert!(b <= max);
        prop_assert!(b >= delay.min(max), "backoff {b} below the first delay");

        let got = retry_delay(&c, n, prev, random).as_nanos();
        prop_assert!(got <= max, "{got} above max_delay {max} for {c:?} n={n}");
        let (jlo, jhi) = match c.jitter {
            Jitter::None => (b, b),
            Jitter::Full => (0, b),
            Jitter::Equal => (b / 2, b),
            Jitter::Decorrelated => (delay, (3 * prev.as_nanos()).min(max)),
        };
        prop_assert!(
            jlo <= got && got <= jhi,
            "{:?}: {got} not in [{jlo}, {jhi}] (backoff {b}, prev {prev:?}, n {n})",
            c.jitter
        );
    }

    /// The extremes of the random number reach the ends of the jitter ranges.
    #[test]
    fn jitter_extremes_reach_the_bounds(c in retry_config(), n in 1u32..=40) {
        let b = backoff_delay(&c, n);
        let (at_0, at_max) = (
            retry_delay(&c, n, c.delay, 0),
            retry_delay(&c, n, c.delay, u64::MAX),
        );
        match c.jitter {
            Jitter::None => prop_assert_eq!((at_0, at_max), (b, b)),
            Jitter::Full => {
                prop_assert!(at_0 <= Duration::from_nanos(1));
                prop_assert_eq!(at_max, b);
            }
            Jitter::Equal => {
                prop_assert!(at_0 >= b / 2 && at_0 <= b / 2 + Duration::from_nanos(1));
                prop_assert_eq!(at_max, b);
            }
            Jitter::Decorrelated => {
                prop_assert!(at_0 >= c.delay && at_0 <= c.delay + Duration::from_nanos(1));
                prop_assert_eq!(at_max, (c.delay * 3).min(c.max_delay));
            }
        }
    }
}

/// The settings of a `max_elapsed` case; every duration is whole milliseconds.
#[derive(Debug, Clone)]
struct ElapsedCase {
    max_attempts: u32,
    delay_ms: u64,
    backoff: Backoff,
    multiplier: u32,
    max_delay_ms: u64,
    max_elapsed_ms: u64,
    attempt_ms: Vec<u64>,
}

fn elapsed_case() -> impl Strategy<Value = ElapsedCase> {
    (
        2u32..=8,
        1u64..=500,
        backoff_kind(),
        1u32..=3,
        0u64..=2_000,
        1u64..=5_000,
        prop::collection::vec(0u64..=1_500, 8),
    )
        .prop_map(
            |(max_attempts, delay_ms, backoff, multiplier, extra, max_elapsed_ms, attempt_ms)| {
                ElapsedCase {
                    max_attempts,
                    delay_ms,
                    backoff,
                    multiplier,
                    max_delay_ms: delay_ms + extra,
                    max_elapsed_ms,
                    attempt_ms,
                }
            },
        )
}

impl ElapsedCase {
    /// The start of each attempt (ms after the first), by the rules of API.md: stop
    /// after `max_attempts`, or when the next attempt would start after `max_elapsed`.
    fn model(&self) -> Vec<u64> {
        let cfg = self.retry_config();
        let mut starts = vec![0];
        let mut t = 0;
        for i in 0..self.max_attempts as usize {
            let end = t + self.attempt_ms[i];
            if i + 1 == self.max_attempts as usize {
                break;
            }
            let delay = backoff_delay(&cfg, i as u32 + 1).as_millis() as u64;
            if end + delay > self.max_elapsed_ms {
                break;
            }
            t = end + delay;
            starts.push(t);
        }
        starts
    }

    fn retry_config(&self) -> RetryConfig {
        RetryConfig {
            max_attempts: self.max_attempts,
            delay: Duration::from_millis(self.delay_ms),
            backoff: self.backoff,
            multiplier: f64::from(self.multiplier),
            max_delay: Duration::from_millis(self.max_delay_ms),
            jitter: Jitter::None,
            max_elapsed: Some(Duration::from_millis(self.max_elapsed_ms)),
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// (b) No attempt starts later than `max_elapsed` after the first began (attempt
    /// time counts), and retrying stops exactly where the rules say.
    #[test]
    fn no_attempt_starts_after_max_elapsed(case in elapsed_case()) {
        let starts = paused_runtime().block_on(async {
            let p = Resilience::builder(unique("prop::max_elapsed"))
                .no_circuit_breaker()
                .max_attempts(case.max_attempts)
                .delay(Duration::from_millis(case.delay_ms))
                .backoff(case.backoff)
                .multiplier(f64::from(case.multiplier))
                .max_delay(Duration::from_millis(case.max_delay_ms))
                .jitter(Jitter::None)
                .max_elapsed(Duration::from_millis(case.max_elapsed_ms))
                .build()
                .unwrap();
            let starts = Mutex::new(Vec::new());
            let t0 = Instant::now();
            let r: Result<(), E> = p
                .call(|| async {
                    let i = {
                        let mut s = starts.lock().unwrap();
                        s.push(Instant::now());
                        s.len() - 1
                    };
                    tokio::time::sleep(Duration::from_millis(case.attempt_ms[i])).await;
                    Err(E::Boom)
                })
                .await;
            assert_eq!(r, Err(E::Boom));
            let starts = starts.into_inner().unwrap();
            assert_eq!(starts[0], t0, "the first attempt starts at once");
            starts
                .iter()
                .map(|s| (*s - t0).as_millis() as u64)
                .collect::<Vec<_>>()
        });
        for (i, s) in starts.iter().enumerate().skip(1) {
            prop_assert!(
                *s <= case.max_elapsed_ms,
                "attempt {} started at {s}ms, after max_elapsed {}ms: {starts:?}",
                i + 1,
                case.max_elapsed_ms
            );
        }
        prop_assert_eq!(starts, case.model());
    }
}

/// One caller of a rate-limit case: it arrives `gap_ms` after the previous one and
/// gives up after `cancel_after_ms`, if set.
#[derive(Debug, Clone)]
struct Caller {
    gap_ms: u64,
    cancel_after_ms: Option<u64>,
}

#[derive(Debug, Clone)]
struct RateCase {
    permits: u32,
    interval_ms: u64,
    burst: u32,
    max_wait_ms: u64,
    callers: Vec<Caller>,
}

fn rate_case() -> impl Strategy<Value = RateCase> {
    let caller = (
        prop_oneof![3 => Just(0u64), 5 => 0u64..=30, 1 => 0u64..=300],
        prop_oneof![3 => Just(None), 1 => (0u64..=200).prop_map(Some)],
    )
        .prop_map(|(gap_ms, cancel_after_ms)| Caller {
            gap_ms,
            cancel_after_ms,
        });
    (
        1u32..=5,
        1u64..=50,
        1u32..=5,
        prop_oneof![Just(0u64), 0u64..=300],
        prop::collection::vec(caller, 1..=60),
    )
        .prop_map(
            |(permits, interval_ms, burst, max_wait_ms, callers)| RateCase {
                permits,
                interval_ms,
                burst,
                max_wait_ms,
                callers,
            },
        )
}

proptest! {
    #![proptest_config(config(512))]

    /// (c) In any window [t, t + w] of the grant times, at most `w / T + burst`
    /// permits were granted (T = per / permits). Callers arrive at random times, some
    /// wait for their permit and some give up while waiting.
    #[test]
    fn the_rate_limiter_never_grants_more_than_rate_times_window_plus_burst(case in rate_case()) {
        let interval = case.interval_ms * MS;
        let (grants, rejected) = paused_runtime().block_on(async {
            let p = Resilience::builder(unique("prop::rate"))
                .no_circuit_breaker()
                .no_retry()
                .rate(Rate::new(
                    case.permits,
                    Duration::from_millis(case.interval_ms * u64::from(case.permits)),
                ))
                .burst(case.burst)
                .rate_max_wait(Duration::from_millis(case.max_wait_ms))
                .build()
                .unwrap();
            let grants = Arc::new(Mutex::new(Vec::new()));
            let rejected = Arc::new(AtomicU64::new(0));
            let t0 = Instant::now();
            let mut at = 0;
            let mut tasks = Vec::new();
            for c in case.callers.clone() {
                at += c.gap_ms;
                let (p, grants, rejected) = (p.clone(), grants.clone(), rejected.clone());
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep_until(t0 + Duration::from_millis(at)).await;
                    let call = p.call(|| async {
                        grants.lock().unwrap().push(Instant::now() - t0);
                        Ok::<(), E>(())
                    });
                    let r = match c.cancel_after_ms {
                        Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), call).await {
                            Ok(r) => r,
                            Err(_) => return,
                        },
                        None => call.await,
                    };
                    match r {
                        Ok(()) => {}
                        Err(E::R(ResilienceError::RateLimited { .. })) => {
                            rejected.fetch_add(1, SeqCst);
                        }
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            let mut g = grants.lock().unwrap().clone();
            g.sort();
            (g, rejected.load(SeqCst))
        });
        let g: Vec<u64> = grants.iter().map(|d| d.as_nanos() as u64).collect();
        for i in 0..g.len() {
            for j in i..g.len() {
                let count = (j - i + 1) as u64;
                let allowed = (g[j] - g[i]) / interval + u64::from(case.burst);
                prop_assert!(
                    count <= allowed,
                    "{count} grants in [{}ms, {}ms] but at most {allowed} are allowed \
                     (T = {}ms, burst {}); grants: {:?}",
                    g[i] / MS,
                    g[j] / MS,
                    case.interval_ms,
                    case.burst,
                    grants
                );
            }
        }
        let given_up = case.callers.iter().filter(|c| c.cancel_after_ms.is_some()).count() as u64;
        prop_assert!(g.len() as u64 + rejected + given_up >= case.callers.len() as u64);
    }
}
