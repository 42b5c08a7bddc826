//! Arbitrary builder values and arbitrary strings: nothing panics, and `build()`
//! accepts exactly the settings that API.md's rules allow, naming every key at fault.
//!
//! The oracle below is written from API.md ("Values", the policy tables) and the
//! documented limits: ratios in (0, 1], counts >= 1, durations > 0 where a zero would
//! be meaningless (`cooldown`, `slow_call`, `timeout`, `total_timeout`,
//! `max_elapsed`, the rate's period), a time window of at least 1 s, a count window of
//! at most `MAX_WINDOW_CALLS` calls with `min_calls` no larger than it,
//! `half_open_calls` and `success_threshold` at most 4096, `multiplier` finite and
//! at least 1, `max_delay >= delay`, `cooldown_max >= cooldown`, and `failure_threshold`
//! (consecutive mode) not combined with rate-mode keys or `window_calls` with
//! `window_time`. Keys left out take the `strategy` preset's values, and a policy
//! that is not there (`no_circuit_breaker()`, `no_retry()`, no bulkhead or rate-limit
//! key) is not checked.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config;
use resilience_runtime::{
    format_duration, parse_duration, Backoff, Hooks, Jitter, Rate, Resilience, ResilienceBuilder,
    ResilienceError, Strategy as Preset, Window, MAX_WINDOW_CALLS,
};

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

fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}#{}", N.fetch_add(1, SeqCst))
}

/// One builder call.
#[derive(Debug, Clone)]
enum Op {
    Strategy(Preset),
    FailureThreshold(u32),
    FailureRate(f64),
    WindowCalls(u32),
    WindowTime(Duration),
    MinCalls(u32),
    SlowCall(Duration),
    SlowCallRate(f64),
    Cooldown(Duration),
    CooldownMax(Duration),
    HalfOpenCalls(u32),
    SuccessThreshold(u32),
    MaxAttempts(u32),
    Delay(Duration),
    Backoff(Backoff),
    Multiplier(f64),
    MaxDelay(Duration),
    Jitter(Jitter),
    MaxElapsed(Duration),
    Timeout(Duration),
    TotalTimeout(Duration),
    MaxConcurrent(u32),
    BulkheadMaxWait(Duration),
    Rate(Rate),
    Burst(u32),
    RateMaxWait(Duration),
    NoCircuitBreaker,
    NoRetry,
    Bulkhead,
    RateLimit,
}

fn apply(b: ResilienceBuilder, op: &Op) -> ResilienceBuilder {
    match *op {
        Op::Strategy(v) => b.strategy(v),
        Op::FailureThreshold(v) => b.failure_threshold(v),
        Op::FailureRate(v) => b.failure_rate(v),
        Op::WindowCalls(v) => b.window_calls(v),
        Op::WindowTime(v) => b.window_time(v),
        Op::MinCalls(v) => b.min_calls(v),
        Op::SlowCall(v) => b.slow_call(v),
        Op::SlowCallRate(v) => b.slow_call_rate(v),
        Op::Cooldown(v) => b.cooldown(v),
        Op::CooldownMax(v) => b.cooldown_max(v),
        Op::HalfOpenCalls(v) => b.half_open_calls(v),
        Op::SuccessThreshold(v) => b.success_threshold(v),
        Op::MaxAttempts(v) => b.max_attempts(v),
        Op::Delay(v) => b.delay(v),
        Op::Backoff(v) => b.backoff(v),
        Op::Multiplier(v) => b.multiplier(v),
        Op::MaxDelay(v) => b.max_delay(v),
        Op::Jitter(v) => b.jitter(v),
        Op::MaxElapsed(v) => b.max_elapsed(v),
        Op::Timeout(v) => b.timeout(v),
        Op::TotalTimeout(v) => b.total_timeout(v),
        Op::MaxConcurrent(v) => b.max_concurrent(v),
        Op::BulkheadMaxWait(v) => b.bulkhead_max_wait(v),
        Op::Rate(v) => b.rate(v),
        Op::Burst(v) => b.burst(v),
        Op::RateMaxWait(v) => b.rate_max_wait(v),
        Op::NoCircuitBreaker => b.no_circuit_breaker(),
        Op::NoRetry => b.no_retry(),
        Op::Bulkhead => b.bulkhead(),
        Op::RateLimit => b.rate_limit(),
    }
}

/// The keys as written (the last write wins) and which policies are there.
#[derive(Debug, Default)]
struct Written {
    strategy: Option<Preset>,
    breaker: bool,
    retry: bool,
    bulkhead: bool,
    rate_limit: bool,
    failure_threshold: Option<u32>,
    failure_rate: Option<f64>,
    window_calls: Option<u32>,
    window_time: Option<Duration>,
    min_calls: Option<u32>,
    slow_call: Option<Duration>,
    slow_call_rate: Option<f64>,
    cooldown: Option<Duration>,
    cooldown_max: Option<Duration>,
    half_open_calls: Option<u32>,
    success_threshold: Option<u32>,
    max_attempts: Option<u32>,
    delay: Option<Duration>,
    multiplier: Option<f64>,
    max_delay: Option<Duration>,
    max_elapsed: Option<Duration>,
    timeout: Option<Duration>,
    total_timeout: Option<Duration>,
    max_concurrent: Option<u32>,
    rate: Option<Rate>,
    burst: Option<u32>,
}

impl Written {
    fn from_ops(ops: &[Op]) -> Self {
        // `Resilience::builder` starts with a breaker and a retry.
        let mut w = Written {
            breaker: true,
            retry: true,
            ..Written::default()
        };
        for op in ops {
            match *op {
                Op::Strategy(v) => w.strategy = Some(v),
                Op::FailureThreshold(v) => (w.failure_threshold, w.breaker) = (Some(v), true),
                Op::FailureRate(v) => (w.failure_rate, w.breaker) = (Some(v), true),
                Op::WindowCalls(v) => (w.window_calls, w.breaker) = (Some(v), true),
                Op::WindowTime(v) => (w.window_time, w.breaker) = (Some(v), true),
                Op::MinCalls(v) => (w.min_calls, w.breaker) = (Some(v), true),
                Op::SlowCall(v) => (w.slow_call, w.breaker) = (Some(v), true),
                Op::SlowCallRate(v) => (w.slow_call_rate, w.breaker) = (Some(v), true),
                Op::Cooldown(v) => (w.cooldown, w.breaker) = (Some(v), true),
                Op::CooldownMax(v) => (w.cooldown_max, w.breaker) = (Some(v), true),
                Op::HalfOpenCalls(v) => (w.half_open_calls, w.breaker) = (Some(v), true),
                Op::SuccessThreshold(v) => (w.success_threshold, w.breaker) = (Some(v), true),
                Op::MaxAttempts(v) => (w.max_attempts, w.retry) = (Some(v), true),
                Op::Delay(v) => (w.delay, w.retry) = (Some(v), true),
                Op::Backoff(_) | Op::Jitter(_) => w.retry = true,
                Op::Multiplier(v) => (w.multiplier, w.retry) = (Some(v), true),
                Op::MaxDelay(v) => (w.max_delay, w.retry) = (Some(v), true),
                Op::MaxElapsed(v) => (w.max_elapsed, w.retry) = (Some(v), true),
                Op::Timeout(v) => w.timeout = Some(v),
                Op::TotalTimeout(v) => w.total_timeout = Some(v),
                Op::MaxConcurrent(v) => (w.max_concurrent, w.bulkhead) = (Some(v), true),
                Op::BulkheadMaxWait(_) | Op::Bulkhead => w.bulkhead = true,
                Op::Rate(v) => (w.rate, w.rate_limit) = (Some(v), true),
                Op::Burst(v) => (w.burst, w.rate_limit) = (Some(v), true),
                Op::RateMaxWait(_) | Op::RateLimit => w.rate_limit = true,
                Op::NoCircuitBreaker => w.breaker = false,
                Op::NoRetry => w.retry = false,
            }
        }
        w
    }

    /// The keys at fault, by API.md's rules; empty when the settings are valid.
    fn problems(&self) -> BTreeSet<&'static str> {
        let mut bad = BTreeSet::new();
        let mut check = |ok: bool, path: &'static str| {
            if !ok {
                bad.insert(path);
            }
        };
        let ratio = |r: f64| r > 0.0 && r <= 1.0;
        let preset = self.strategy.unwrap_or_default().preset();
        if self.breaker {
            let pb = preset.breaker.unwrap();
            let (p_rate, p_window, p_min) = match pb.mode {
                resilience_runtime::BreakerMode::Rate {
                    failure_rate,
                    window: Window::Calls(n),
                    min_calls,
                } => (failure_rate, n, min_calls),
                other => {
                    unreachable!("every preset is in rate mode with a count window: {other:?}")
                }
            };
            let rate_keys = self.failure_rate.is_some()
                || self.window_calls.is_some()
                || self.window_time.is_some()
                || self.min_calls.is_some()
                || self.slow_call_rate.is_some();
            check(
                !(self.failure_threshold.is_some() && rate_keys),
                "circuit_breaker.failure_threshold",
            );
            check(
                !(self.window_calls.is_some() && self.window_time.is_some()),
                "circuit_breaker.window",
            );
            match self.failure_threshold {
                Some(n) => check(n >= 1, "circuit_breaker.failure_threshold"),
                None => {
                    check(
                        ratio(self.failure_rate.unwrap_or(p_rate)),
                        "circuit_breaker.failure_rate",
                    );
                    match (self.window_calls, self.window_time) {
                        (Some(n), _) => {
                            let min = self.min_calls.unwrap_or(n);
                            check(
                                (1..=MAX_WINDOW_CALLS).contains(&n),
                                "circuit_breaker.window",
                            );
                            check(min >= 1, "circuit_breaker.min_calls");
                            check(n == 0 || min <= n, "circuit_breaker.min_calls");
                        }
                        (None, Some(d)) => {
                            check(d >= Duration::from_secs(1), "circuit_breaker.window");
                            check(
                                self.min_calls.unwrap_or(p_min) >= 1,
                                "circuit_breaker.min_calls",
                            );
                        }
                        (None, None) => {
                            let min = self.min_calls.unwrap_or(p_min.min(p_window));
                            check((1..=p_window).contains(&min), "circuit_breaker.min_calls");
                        }
                    }
                }
            }
            if let Some(d) = self.slow_call {
                check(!d.is_zero(), "circuit_breaker.slow_call");
            }
            check(
                ratio(self.slow_call_rate.unwrap_or(pb.slow_call_rate)),
                "circuit_breaker.slow_call_rate",
            );
            let cooldown = self.cooldown.unwrap_or(pb.cooldown);
            check(!cooldown.is_zero(), "circuit_breaker.cooldown");
            if let Some(max) = self.cooldown_max {
                check(max >= cooldown, "circuit_breaker.cooldown_max");
            }
            let half_open = self.half_open_calls.unwrap_or(pb.half_open_calls);
            check(
                (1..=4096).contains(&half_open),
                "circuit_breaker.half_open_calls",
            );
            let success = self.success_threshold.unwrap_or(pb.success_threshold);
            check(
                (1..=4096).contains(&success),
                "circuit_breaker.success_threshold",
            );
        }
        if self.retry {
            let pr = preset.retry.unwrap();
            check(
                self.max_attempts.unwrap_or(pr.max_attempts) >= 1,
                "retry.max_attempts",
            );
            let m = self.multiplier.unwrap_or(pr.multiplier);
            check(m.is_finite() && m >= 1.0, "retry.multiplier");
            let delay = self.delay.unwrap_or(pr.delay);
            if let Some(max) = self.max_delay {
                check(max >= delay, "retry.max_delay");
            }
            if let Some(e) = self.max_elapsed {
                check(!e.is_zero(), "retry.max_elapsed");
            }
        }
        if let Some(t) = self.timeout {
            check(!t.is_zero(), "timeout");
        }
        if let Some(t) = self.total_timeout {
            check(!t.is_zero(), "total_timeout");
        }
        if self.bulkhead {
            check(
                self.max_concurrent.unwrap_or(10) >= 1,
                "bulkhead.max_concurrent",
            );
        }
        if self.rate_limit {
            let rate = self.rate.unwrap_or(Rate::per_second(100));
            check(rate.permits >= 1 && !rate.per.is_zero(), "rate_limit.rate");
            if let Some(b) = self.burst {
                check(b >= 1, "rate_limit.burst");
            }
        }
        bad
    }
}

fn any_ratio() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => any::<f64>(),
        3 => -0.5f64..=1.5,
        1 => prop::sample::select(vec![
            0.0,
            -0.0,
            1.0,
            f64::MIN_POSITIVE,
            1.0 + f64::EPSILON,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.0,
        ]),
    ]
}

fn any_multiplier() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => any::<f64>(),
        3 => 0.0f64..=5.0,
        1 => prop::sample::select(vec![
            1.0,
            1.0 - f64::EPSILON,
            f64::MAX,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -2.0,
            0.0,
        ]),
    ]
}

fn any_count() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => any::<u32>(),
        4 => 0u32..=30,
        1 => (MAX_WINDOW_CALLS - 2)..=(MAX_WINDOW_CALLS + 2),
        1 => 4094u32..=4098,
        1 => Just(u32::MAX),
    ]
}

fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        2 => (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        3 => (0u64..=120_000).prop_map(Duration::from_millis),
        1 => (999_999_000u64..=1_000_001_000).prop_map(Duration::from_nanos),
        1 => (0u64..=2_000).prop_map(Duration::from_nanos),
        1 => Just(Duration::ZERO),
        1 => Just(Duration::MAX),
    ]
}

fn any_preset() -> impl Strategy<Value = Preset> {
    prop::sample::select(Preset::ALL.to_vec())
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any_preset().prop_map(Op::Strategy),
        any_count().prop_map(Op::FailureThreshold),
        any_ratio().prop_map(Op::FailureRate),
        any_count().prop_map(Op::WindowCalls),
        any_duration().prop_map(Op::WindowTime),
        any_count().prop_map(Op::MinCalls),
        any_duration().prop_map(Op::SlowCall),
        any_ratio().prop_map(Op::SlowCallRate),
        any_duration().prop_map(Op::Cooldown),
        any_duration().prop_map(Op::CooldownMax),
        any_count().prop_map(Op::HalfOpenCalls),
        any_count().prop_map(Op::SuccessThreshold),
        any_count().prop_map(Op::MaxAttempts),
        any_duration().prop_map(Op::Delay),
        prop::sample::select(vec![Backoff::Fixed, Backoff::Linear, Backoff::Exponential])
            .prop_map(Op::Backoff),
        any_multiplier().prop_map(Op::Multiplier),
        any_duration().prop_map(Op::MaxDelay),
        prop::sample::select(vec![
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated
        ])
        .prop_map(Op::Jitter),
        any_duration().prop_map(Op::MaxElapsed),
        any_duration().prop_map(Op::Timeout),
        any_duration().prop_map(Op::TotalTimeout),
        any_count().prop_map(Op::MaxConcurrent),
        any_duration().prop_map(Op::BulkheadMaxWait),
        (any_count(), any_duration()).prop_map(|(n, per)| Op::Rate(Rate::new(n, per))),
        any_count().prop_map(Op::Burst),
        any_duration().prop_map(Op::RateMaxWait),
        Just(Op::NoCircuitBreaker),
        Just(Op::NoRetry),
        Just(Op::Bulkhead),
        Just(Op::RateLimit),
    ]
}

proptest! {
    #![proptest_config(config(1024))]

    /// `build()` never panics; it is `Ok` exactly when the oracle finds no problem, and
    /// its `Err` names exactly the keys at fault, each with a message.
    #[test]
    fn build_accepts_exactly_the_valid_settings_and_names_every_bad_key(
        ops in prop::collection::vec(any_op(), 0..12),
    ) {
        let name = unique("bad_input::build");
        let builder = ops.iter().fold(Resilience::builder(&name), apply);
        let expected = Written::from_ops(&ops).problems();
        let got = std::panic::catch_unwind(move || builder.build());
        let got = match got {
            Ok(r) => r,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
                return Err(TestCaseError::fail(format!("build() panicked: {msg:?}")));
            }
        };
        match got {
            Ok(p) => {
                prop_assert!(expected.is_empty(), "accepted, but expected problems {expected:?}");
                prop_assert_eq!(p.service().name(), name.as_str());
            }
            Err(e) => {
                for p in e.problems() {
                    prop_assert!(!p.message.trim().is_empty(), "empty message for {}", p.path);
                    prop_assert!(
                        e.to_string().contains(&p.path),
                        "the error's text names {}: {e}",
                        p.path
                    );
                }
                let paths: BTreeSet<&str> = e.problems().iter().map(|p| p.path.as_str()).collect();
                prop_assert!(!paths.is_empty());
                prop_assert_eq!(&paths, &expected, "error: {}", e);
                prop_assert!(
                    resilience_runtime::status(&name).is_none(),
                    "an invalid builder registers nothing"
                );
            }
        }
    }
}

/// Durations at the extremes: zero, tiny, whole milliseconds, `Duration::MAX`.
fn extreme_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::MAX),
        Just(Duration::from_secs(u64::MAX / 2)),
        Just(Duration::from_nanos(1)),
        (0u64..=50).prop_map(Duration::from_millis),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

fn extreme_count() -> impl Strategy<Value = u32> {
    prop_oneof![Just(1u32), Just(2), Just(u32::MAX), 1u32..=5, any::<u32>()]
}

fn valid_extreme_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any_preset().prop_map(Op::Strategy),
        extreme_count().prop_map(Op::FailureThreshold),
        extreme_duration().prop_map(Op::SlowCall),
        extreme_duration().prop_map(Op::Cooldown),
        extreme_count().prop_map(Op::MaxAttempts),
        extreme_duration().prop_map(Op::Delay),
        prop::sample::select(vec![Backoff::Fixed, Backoff::Linear, Backoff::Exponential])
            .prop_map(Op::Backoff),
        prop_oneof![Just(1.0), Just(f64::MAX), 1.0f64..=1e6].prop_map(Op::Multiplier),
        extreme_duration().prop_map(Op::MaxDelay),
        prop::sample::select(vec![
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated
        ])
        .prop_map(Op::Jitter),
        extreme_duration().prop_map(Op::MaxElapsed),
        extreme_duration().prop_map(Op::Timeout),
        extreme_duration().prop_map(Op::TotalTimeout),
        extreme_count().prop_map(Op::MaxConcurrent),
        extreme_duration().prop_map(Op::BulkheadMaxWait),
        (extreme_count(), extreme_duration()).prop_map(|(n, per)| Op::Rate(Rate::new(n, per))),
        extreme_count().prop_map(Op::Burst),
        extreme_duration().prop_map(Op::RateMaxWait),
        Just(Op::NoCircuitBreaker),
        Just(Op::NoRetry),
        Just(Op::Bulkhead),
        Just(Op::RateLimit),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    /// Whatever valid extreme values a builder takes (`Duration::MAX` waits, a rate of
    /// one permit per `Duration::MAX`, `u32::MAX` counts), calls through it do not
    /// panic: three concurrent calls, each failing its first attempt (after 1 ms),
    /// on a paused clock, optionally with a server hint (`retry_after`) of
    /// `Duration::MAX`.
    #[test]
    fn valid_extreme_settings_never_panic_when_called(
        ops in prop::collection::vec(valid_extreme_op(), 0..10),
        huge_hint in any::<bool>(),
    ) {
        let builder = ops.iter().fold(Resilience::builder(unique("bad_input::extreme")), apply);
        let Ok(p) = builder.build() else {
            return Ok(()); // invalid combinations are the other test's business
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(async {
                let mut tasks = Vec::new();
                for _ in 0..3 {
                    let p = p.clone();
                    tasks.push(tokio::spawn(async move {
                        let attempts = Arc::new(AtomicU32::new(0));
                        let hooks = Hooks {
                            retry_after: huge_hint.then_some(hint_max as fn(&E) -> Option<Duration>),
                            ..Hooks::DEFAULT
                        };
                        p.call_with(&hooks, || {
                            let attempts = attempts.clone();
                            async move {
                                tokio::time::sleep(Duration::from_millis(1)).await;
                                if attempts.fetch_add(1, SeqCst) == 0 {
                                    Err(E::Boom)
                                } else {
                                    Ok(())
                                }
                            }
                        })
                        .await
                    }));
                }
                let mut results = Vec::new();
                for t in tasks {
                    results.push(t.await.expect("no panic in a call"));
                }
                results
            })
        }));
        let results = match outcome {
            Ok(r) => r,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
                return Err(TestCaseError::fail(format!(
                    "a call panicked: {msg:?} with {:?}",
                    p_config(&ops)
                )));
            }
        };
        for r in results {
            prop_assert!(matches!(r, Ok(()) | Err(E::Boom) | Err(E::R(_))), "{r:?}");
        }
        if let Some(max) = p.service().config().bulkhead.map(|b| b.max_concurrent) {
            prop_assert_eq!(p.service().bulkhead_available(), Some(max));
        }
    }
}

fn hint_max(_: &E) -> Option<Duration> {
    Some(Duration::MAX)
}

fn p_config(ops: &[Op]) -> String {
    format!("{ops:?}")
}

fn rate_like() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        "[0-9]{0,12}",
        Just("4294967295".to_string()),
        Just("4294967296".to_string()),
        Just("-1".to_string()),
        Just(" 7 ".to_string()),
        "\\PC{0,3}",
    ];
    let unit = prop_oneof![
        prop::sample::select(vec!["ms", "s", "m", "h", "d", "", " s", "S", "µs", "/s"])
            .prop_map(str::to_string),
        "\\PC{0,4}",
    ];
    let sep = prop::sample::select(vec!["/", "//", "", " / ", "per"]);
    (number, sep, unit).prop_map(|(n, s, u)| format!("{n}{s}{u}"))
}

fn duration_like() -> impl Strategy<Value = String> {
    let part = (
        prop_oneof!["[0-9]{0,25}", Just(String::new())],
        prop_oneof![
            prop::sample::select(vec![
                "ns", "us", "µs", "ms", "s", "m", "h", "d", "", "x", "sec", " ", "µ"
            ])
            .prop_map(str::to_string),
            "\\PC{0,3}",
        ],
    )
        .prop_map(|(n, u)| format!("{n}{u}"));
    (
        prop::collection::vec(part, 0..5),
        prop::sample::select(vec!["", " ", "\t", "\n"]),
    )
        .prop_map(|(parts, pad)| format!("{pad}{}{pad}", parts.concat()))
}

proptest! {
    #![proptest_config(config(4096))]

    /// `Rate::from_str` on arbitrary strings never panics; an error names the input.
    #[test]
    fn rate_from_str_never_panics_and_errors_name_the_input(
        s in prop_oneof![any::<String>(), rate_like()],
    ) {
        match s.parse::<Rate>() {
            Ok(r) => {
                prop_assert!(r.permits >= 1 && !r.per.is_zero());
                prop_assert_eq!(r.to_string().parse::<Rate>(), Ok(r), "round trip of {:?}", s);
            }
            Err(msg) => {
                prop_assert!(!msg.is_empty());
                prop_assert!(msg.contains(&s), "{msg:?} does not name {s:?}");
            }
        }
    }

    /// `parse_duration` on arbitrary strings never panics; an error names the input.
    #[test]
    fn parse_duration_never_panics_and_errors_name_the_input(
        s in prop_oneof![any::<String>(), duration_like()],
    ) {
        match parse_duration(&s) {
            Ok(d) => {
                // What it formats back to parses to the same duration, to the ms.
                let ms = Duration::from_millis(d.as_millis().min(u128::from(u64::MAX)) as u64);
                if d >= Duration::from_millis(1) {
                    prop_assert_eq!(parse_duration(&format_duration(ms)), Ok(ms));
                }
            }
            Err(msg) => {
                prop_assert!(!msg.is_empty());
                prop_assert!(msg.contains(s.trim()), "{msg:?} does not name {s:?}");
            }
        }
    }
}

/// A sync caller waiting for a bulkhead slot with `max_wait = Duration::MAX` ("wait as
/// long as it takes") gets the slot when it frees up; the deadline does not overflow.
#[test]
fn a_sync_bulkhead_wait_of_duration_max_waits_for_the_slot() {
    let p = Resilience::builder(unique("bad_input::sync_wait_forever"))
        .no_circuit_breaker()
        .no_retry()
        .max_concurrent(1)
        .bulkhead_max_wait(Duration::MAX)
        .build()
        .unwrap();
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let holder = {
        let p = p.clone();
        std::thread::spawn(move || {
            p.call_sync(|| {
                entered_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(50));
                Ok::<u32, E>(1)
            })
        })
    };
    entered_rx.recv().unwrap();
    assert_eq!(p.service().bulkhead_available(), Some(0));
    assert_eq!(p.call_sync(|| Ok::<u32, E>(2)), Ok(2));
    assert_eq!(holder.join().unwrap(), Ok(1));
    assert_eq!(p.service().bulkhead_available(), Some(1));
}
