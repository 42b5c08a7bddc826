//! Policy settings: the `Spec` an attribute or builder writes (keys left out are
//! `None`), the strategy presets it is laid over, and the resolved, validated
//! `PolicyConfig` a service runs with.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{ConfigError, ConfigProblem};

/// A named set of defaults. Keys not written take the preset's values.
///
/// | | aggressive | balanced | conservative | critical |
/// |---|---|---|---|---|
/// | failure_rate | 0.25 | 0.5 | 0.75 | 0.5 |
/// | window (calls) | 10 | 20 | 50 | 20 |
/// | min_calls | 5 | 10 | 20 | 10 |
/// | cooldown | 60s | 30s | 15s | 10s |
/// | cooldown_max | 5m | - | - | 2m |
/// | half_open_calls | 1 | 1 | 2 | 3 |
/// | success_threshold | 2 | 1 | 1 | 2 |
/// | max_attempts | 2 | 3 | 5 | 5 |
/// | delay | 50ms | 100ms | 200ms | 100ms |
/// | backoff | exponential x2 | exponential x2 | exponential x2 | exponential x2 |
/// | max_delay | 500ms | 2s | 10s | 5s |
/// | jitter | full | full | equal | decorrelated |
///
/// `aggressive` protects the caller: it opens early and stays open long.
/// `conservative` tolerates errors and keeps trying. `critical` is for dependencies
/// the service cannot work without: it retries hard, probes with several calls and
/// comes back fast.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Open early, stay open long, retry little.
    Aggressive,
    /// The default.
    #[default]
    Balanced,
    /// Tolerate errors, retry more.
    Conservative,
    /// Retry hard, recover fast.
    Critical,
}

impl Strategy {
    /// Every preset, in the order of the table.
    pub const ALL: [Strategy; 4] = [
        Strategy::Aggressive,
        Strategy::Balanced,
        Strategy::Conservative,
        Strategy::Critical,
    ];

    /// The preset's name as written in attributes and configuration.
    pub const fn name(self) -> &'static str {
        match self {
            Strategy::Aggressive => "aggressive",
            Strategy::Balanced => "balanced",
            Strategy::Conservative => "conservative",
            Strategy::Critical => "critical",
        }
    }

    /// The preset's full configuration: breaker and retry, no other policy.
    pub const fn preset(self) -> PolicyConfig {
        const fn ms(n: u64) -> Duration {
            Duration::from_millis(n)
        }
        const fn s(n: u64) -> Duration {
            Duration::from_secs(n)
        }
        let (rate, window, min_calls, cooldown, cooldown_max, half_open, succ) = match self {
            Strategy::Aggressive => (0.25, 10, 5, s(60), Some(s(300)), 1, 2),
            Strategy::Balanced => (0.5, 20, 10, s(30), None, 1, 1),
            Strategy::Conservative => (0.75, 50, 20, s(15), None, 2, 1),
            Strategy::Critical => (0.5, 20, 10, s(10), Some(s(120)), 3, 2),
        };
        let (attempts, delay, max_delay, jitter) = match self {
            Strategy::Aggressive => (2, ms(50), ms(500), Jitter::Full),
            Strategy::Balanced => (3, ms(100), s(2), Jitter::Full),
            Strategy::Conservative => (5, ms(200), s(10), Jitter::Equal),
            Strategy::Critical => (5, ms(100), s(5), Jitter::Decorrelated),
        };
        PolicyConfig {
            breaker: Some(BreakerConfig {
                mode: BreakerMode::Rate {
                    failure_rate: rate,
                    window: Window::Calls(window),
                    min_calls,
                },
                slow_call: None,
                slow_call_rate: 1.0,
                cooldown,
                cooldown_max,
                half_open_calls: half_open,
                success_threshold: succ,
            }),
            retry: Some(RetryConfig {
                max_attempts: attempts,
                delay,
                backoff: Backoff::Exponential,
                multiplier: 2.0,
                max_delay,
                jitter,
                max_elapsed: None,
            }),
            timeout: None,
            total_timeout: None,
            bulkhead: None,
            rate_limit: None,
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Strategy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown strategy `{s}`: expected one of `aggressive`, `balanced`, \
                 `conservative`, `critical`"
                )
            })
    }
}

/// How retry delays grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// Every delay is `delay`.
    Fixed,
    /// The n-th retry waits `delay * n`.
    Linear,
    /// The n-th retry waits `delay * multiplier^(n-1)`.
    Exponential,
}

impl FromStr for Backoff {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fixed" => Ok(Backoff::Fixed),
            "linear" => Ok(Backoff::Linear),
            "exponential" => Ok(Backoff::Exponential),
            _ => Err(format!(
                "unknown backoff `{s}`: expected one of `fixed`, `linear`, `exponential`"
            )),
        }
    }
}

/// How each retry delay is randomised, so that many clients do not retry in step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    /// The delay as computed.
    None,
    /// Uniform in `[0, d]`.
    Full,
    /// Uniform in `[d/2, d]`.
    Equal,
    /// Uniform in `[delay, 3 * previous]`, capped at `max_delay`.
    Decorrelated,
}

impl FromStr for Jitter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Jitter::None),
            "full" => Ok(Jitter::Full),
            "equal" => Ok(Jitter::Equal),
            "decorrelated" => Ok(Jitter::Decorrelated),
            _ => Err(format!(
                "unknown jitter `{s}`: expected one of `none`, `full`, `equal`, `decorrelated`"
            )),
        }
    }
}

/// A rate: `permits` per `per`, written `"100/s"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Permits granted per period.
    pub permits: u32,
    /// The period.
    pub per: Duration,
}

impl Rate {
    /// `permits` per `per`.
    pub const fn new(permits: u32, per: Duration) -> Self {
        Self { permits, per }
    }
    /// `permits` per second.
    pub const fn per_second(permits: u32) -> Self {
        Self::new(permits, Duration::from_secs(1))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_millis() {
            1 => "ms",
            1_000 => "s",
            60_000 => "m",
            3_600_000 => "h",
            _ => return write!(f, "{}/{}", self.permits, format_duration(self.per)),
        };
        write!(f, "{}/{}", self.permits, unit)
    }
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("invalid rate `{s}`: write it as `N/ms`, `N/s`, `N/m` or `N/h`, e.g. `100/s`")
        };
        let (n, unit) = s.split_once('/').ok_or_else(bad)?;
        let permits: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if permits == 0 {
            return Err(format!(
                "invalid rate `{s}`: the number of permits must be at least 1"
            ));
        }
        Ok(Rate::new(permits, per))
    }
}

/// The window a rate-mode breaker computes its rates over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    /// The last N recorded calls.
    Calls(u32),
    /// The calls of the last period, kept in buckets (1 s wide up to a minute; the
    /// window is split into 60 buckets beyond that).
    Time(Duration),
}

/// How a breaker decides to open.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BreakerMode {
    /// Open on the N-th consecutive failure.
    Consecutive {
        /// N.
        failure_threshold: u32,
    },
    /// Open when failures / recorded >= `failure_rate` over the window, once
    /// `min_calls` outcomes are in it.
    Rate {
        /// The failure ratio that opens the breaker, in (0, 1].
        failure_rate: f64,
        /// The window.
        window: Window,
        /// No decision before this many outcomes are in the window.
        min_calls: u32,
    },
}

/// A circuit breaker's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive or rate mode.
    pub mode: BreakerMode,
    /// A success slower than this is a slow call.
    pub slow_call: Option<Duration>,
    /// Open when slow / recorded >= this (rate mode).
    pub slow_call_rate: f64,
    /// Time spent open before probing.
    pub cooldown: Duration,
    /// If set, the cooldown doubles each time a probe fails, up to this.
    pub cooldown_max: Option<Duration>,
    /// Probes admitted at once in half-open.
    pub half_open_calls: u32,
    /// Successful probes needed to close.
    pub success_threshold: u32,
}

/// A retry's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryConfig {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The first delay.
    pub delay: Duration,
    /// How delays grow.
    pub backoff: Backoff,
    /// The growth factor of exponential backoff.
    pub multiplier: f64,
    /// The cap on one delay (before a `retry_after` hint).
    pub max_delay: Duration,
    /// Randomisation of each delay.
    pub jitter: Jitter,
    /// No attempt starts later than this after the first began.
    pub max_elapsed: Option<Duration>,
}

/// A bulkhead's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BulkheadConfig {
    /// Calls inside at once.
    pub max_concurrent: u32,
    /// How long a call waits for a slot before failing with `BulkheadFull`.
    pub max_wait: Duration,
}

/// A rate limiter's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// The sustained rate.
    pub rate: Rate,
    /// Permits that may be taken at once after a quiet period.
    pub burst: u32,
    /// A call whose permit comes later than this fails at once with `RateLimited`.
    pub max_wait: Duration,
}

/// Everything a service runs with; a policy is present when its field is `Some`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolicyConfig {
    /// The circuit breaker.
    pub breaker: Option<BreakerConfig>,
    /// The retry.
    pub retry: Option<RetryConfig>,
    /// The limit on each attempt.
    pub timeout: Option<Duration>,
    /// The limit on the whole call, retries and waits included.
    pub total_timeout: Option<Duration>,
    /// The bulkhead.
    pub bulkhead: Option<BulkheadConfig>,
    /// The rate limiter.
    pub rate_limit: Option<RateLimitConfig>,
}

impl PolicyConfig {
    /// No policy at all: calls pass straight through.
    pub const NONE: PolicyConfig = PolicyConfig {
        breaker: None,
        retry: None,
        timeout: None,
        total_timeout: None,
        bulkhead: None,
        rate_limit: None,
    };

    /// Whether any policy can refuse a call or cut it short, so that the caller's
    /// error type must be able to carry a [`crate::ResilienceError`].
    pub fn can_reject(&self) -> bool {
        self.breaker.is_some()
            || self.timeout.is_some()
            || self.total_timeout.is_some()
            || self.bulkhead.is_some()
            || self.rate_limit.is_some()
    }
}

/// The keys of a policy as written, `None` where left out. Both the attributes and
/// [`crate::Resilience`]'s builder produce one; [`Spec::resolve`] lays it over its
/// strategy preset and checks it.
#[derive(Clone, Copy, Debug, PartialEq)]
#[allow(missing_docs)]
pub struct Spec {
    pub strategy: Option<Strategy>,
    pub breaker: bool,
    pub failure_threshold: Option<u32>,
    pub failure_rate: Option<f64>,
    pub window_calls: Option<u32>,
    pub window_time: Option<Duration>,
    pub min_calls: Option<u32>,
    pub slow_call: Option<Duration>,
    pub slow_call_rate: Option<f64>,
    pub cooldown: Option<Duration>,
    pub cooldown_max: Option<Duration>,
    pub half_open_calls: Option<u32>,
    pub success_threshold: Option<u32>,
    pub retry: bool,
    pub max_attempts: Option<u32>,
    pub delay: Option<Duration>,
    pub backoff: Option<Backoff>,
    pub multiplier: Option<f64>,
    pub max_delay: Option<Duration>,
    pub jitter: Option<Jitter>,
    pub max_elapsed: Option<Duration>,
    pub timeout: Option<Duration>,
    pub total_timeout: Option<Duration>,
    pub bulkhead: bool,
    pub max_concurrent: Option<u32>,
    pub bulkhead_max_wait: Option<Duration>,
    pub rate_limit: bool,
    pub rate: Option<Rate>,
    pub burst: Option<u32>,
    pub rate_max_wait: Option<Duration>,
}

impl Default for Spec {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl Spec {
    /// No policy, no key.
    pub const EMPTY: Spec = Spec {
        strategy: None,
        breaker: false,
        failure_threshold: None,
        failure_rate: None,
        window_calls: None,
        window_time: None,
        min_calls: None,
        slow_call: None,
        slow_call_rate: None,
        cooldown: None,
        cooldown_max: None,
        half_open_calls: None,
        success_threshold: None,
        retry: false,
        max_attempts: None,
        delay: None,
        backoff: None,
        multiplier: None,
        max_delay: None,
        jitter: None,
        max_elapsed: None,
        timeout: None,
        total_timeout: None,
        bulkhead: false,
        max_concurrent: None,
        bulkhead_max_wait: None,
        rate_limit: false,
        rate: None,
        burst: None,
        rate_max_wait: None,
    };

    /// Lays the written keys over the strategy preset and checks the result. Every
    /// problem is reported at once, each with the key at fault.
    pub fn resolve(&self) -> Result<PolicyConfig, ConfigError> {
        let mut problems = Vec::new();
        let config = self.merge(&mut problems);
        validate(&config, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::new(problems))
        }
    }

    fn merge(&self, problems: &mut Vec<ConfigProblem>) -> PolicyConfig {
        let preset = self.strategy.unwrap_or_default().preset();
        let pb = preset.breaker.expect("every preset has a breaker");
        let pr = preset.retry.expect("every preset has a retry");
        let rate_keys = self.failure_rate.is_some()
            || self.window_calls.is_some()
            || self.window_time.is_some()
            || self.slow_call_rate.is_some()
            || self.min_calls.is_some();
        // Keys of a breaker that is not there (`no_circuit_breaker()` after them) are
        // not checked, like their values.
        if self.breaker && self.failure_threshold.is_some() && rate_keys {
            problems.push(problem(
                "circuit_breaker.failure_threshold",
                "`failure_threshold` (consecutive mode) cannot be combined with `failure_rate`, \
                 `window`, `min_calls` or `slow_call_rate` (rate mode): keep one mode",
            ));
        }
        if self.breaker && self.window_calls.is_some() && self.window_time.is_some() {
            problems.push(problem(
                "circuit_breaker.window",
                "give the window either as a number of calls or as a duration, not both",
            ));
        }
        let breaker = self.breaker.then(|| {
            let mode = match (self.failure_threshold, pb.mode) {
                (Some(n), _) => BreakerMode::Consecutive {
                    failure_threshold: n,
                },
                (
                    None,
                    BreakerMode::Rate {
                        failure_rate,
                        window,
                        min_calls,
                    },
                ) => {
                    let window = match (self.window_calls, self.window_time) {
                        (Some(n), _) => Window::Calls(n),
                        (None, Some(d)) => Window::Time(d),
                        (None, None) => window,
                    };
                    let min_calls = self.min_calls.unwrap_or(match (self.window_calls, window) {
                        // A written count window defaults `min_calls` to its size.
                        (Some(n), _) => n,
                        (None, Window::Calls(n)) => min_calls.min(n),
                        (None, Window::Time(_)) => min_calls,
                    });
                    BreakerMode::Rate {
                        failure_rate: self.failure_rate.unwrap_or(failure_rate),
                        window,
                        min_calls,
                    }
                }
                (None, consecutive) => consecutive,
            };
            BreakerConfig {
                mode,
                slow_call: self.slow_call.or(pb.slow_call),
                slow_call_rate: self.slow_call_rate.unwrap_or(pb.slow_call_rate),
                cooldown: self.cooldown.unwrap_or(pb.cooldown),
                cooldown_max: self.cooldown_max.or(if self.cooldown.is_some() {
                    // A preset's growth cap below a written cooldown would be invalid:
                    // growth then needs an explicit `cooldown_max`.
                    pb.cooldown_max.filter(|m| Some(*m) >= self.cooldown)
                } else {
                    pb.cooldown_max
                }),
                half_open_calls: self.half_open_calls.unwrap_or(pb.half_open_calls),
                success_threshold: self.success_threshold.unwrap_or(pb.success_threshold),
            }
        });
        let retry = self.retry.then(|| {
            let delay = self.delay.unwrap_or(pr.delay);
            RetryConfig {
                max_attempts: self.max_attempts.unwrap_or(pr.max_attempts),
                delay,
                backoff: self.backoff.unwrap_or(pr.backoff),
                multiplier: self.multiplier.unwrap_or(pr.multiplier),
                // A written delay above the preset's cap lifts the cap to the delay.
                max_delay: self.max_delay.unwrap_or(if self.delay.is_some() {
                    pr.max_delay.max(delay)
                } else {
                    pr.max_delay
                }),
                jitter: self.jitter.unwrap_or(pr.jitter),
                max_elapsed: self.max_elapsed,
            }
        });
        let bulkhead = self.bulkhead.then(|| BulkheadConfig {
            max_concurrent: self.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT),
            max_wait: self.bulkhead_max_wait.unwrap_or(Duration::ZERO),
        });
        let rate_limit = self.rate_limit.then(|| {
            let rate = self.rate.unwrap_or(DEFAULT_RATE);
            RateLimitConfig {
                rate,
                // An invalid rate (0 permits) is reported at `rate`, not again at a
                // `burst` nobody wrote.
                burst: self.burst.unwrap_or(rate.permits.max(1)),
                max_wait: self.rate_max_wait.unwrap_or(Duration::ZERO),
            }
        });
        PolicyConfig {
            breaker,
            retry,
            timeout: self.timeout,
            total_timeout: self.total_timeout,
            bulkhead,
            rate_limit,
        }
    }
}

/// `max_concurrent` when a bulkhead is asked for without one.
pub const DEFAULT_MAX_CONCURRENT: u32 = 10;
/// `rate` when a rate limit is asked for without one.
pub const DEFAULT_RATE: Rate = Rate::per_second(100);

pub(crate) fn problem(path: &str, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        path: path.to_owned(),
        message: message.into(),
    }
}

pub(crate) fn check_ratio(path: &str, r: f64, problems: &mut Vec<ConfigProblem>) {
    if !(r > 0.0 && r <= 1.0) {
        problems.push(problem(path, format!("{r} is not in (0, 1]")));
    }
}

pub(crate) fn check_count(path: &str, n: u32, problems: &mut Vec<ConfigProblem>) {
    if n == 0 {
        problems.push(problem(path, "must be at least 1"));
    }
}

pub(crate) fn check_positive(path: &str, d: Duration, problems: &mut Vec<ConfigProblem>) {
    if d.is_zero() {
        problems.push(problem(path, "must be longer than 0s"));
    }
}

/// The largest count window, in calls (its bits and a counter per call slot).
pub const MAX_WINDOW_CALLS: u32 = 1 << 20;

/// Checks a resolved configuration; used for attributes, builders and documents.
pub(crate) fn validate(c: &PolicyConfig, problems: &mut Vec<ConfigProblem>) {
    if let Some(b) = &c.breaker {
        match b.mode {
            BreakerMode::Consecutive { failure_threshold } => check_count(
                "circuit_breaker.failure_threshold",
                failure_threshold,
                problems,
            ),
            BreakerMode::Rate {
                failure_rate,
                window,
                min_calls,
            } => {
                check_ratio("circuit_breaker.failure_rate", failure_rate, problems);
                check_count("circuit_breaker.min_calls", min_calls, problems);
                match window {
                    Window::Calls(n) => {
                        check_count("circuit_breaker.window", n, problems);
                        if n > MAX_WINDOW_CALLS {
                            problems.push(problem(
                                "circuit_breaker.window",
                                format!(
                                    "{n} calls is more than the largest window, {MAX_WINDOW_CALLS}"
                                ),
                            ));
                        }
                        if n > 0 && min_calls > n {
                            problems.push(problem(
                                "circuit_breaker.min_calls",
                                format!(
                                    "{min_calls} is more than the window ({n} calls): the breaker \
                                     could never decide; lower `min_calls` or widen `window`"
                                ),
                            ));
                        }
                    }
                    Window::Time(d) => {
                        if d < Duration::from_secs(1) {
                            problems.push(problem(
                                "circuit_breaker.window",
                                format!(
                                    "{} is shorter than the shortest time window, 1s",
                                    format_duration(d)
                                ),
                            ));
                        }
                    }
                }
            }
        }
        if let Some(s) = b.slow_call {
            check_positive("circuit_breaker.slow_call", s, problems);
        }
        check_ratio("circuit_breaker.slow_call_rate", b.slow_call_rate, problems);
        check_positive("circuit_breaker.cooldown", b.cooldown, problems);
        if let Some(max) = b.cooldown_max {
            if max < b.cooldown {
                problems.push(problem(
                    "circuit_breaker.cooldown_max",
                    format!(
                        "{} is below `cooldown` ({}): the cap must be at least the first cooldown",
                        format_duration(max),
                        format_duration(b.cooldown)
                    ),
                ));
            }
        }
        check_count(
            "circuit_breaker.half_open_calls",
            b.half_open_calls,
            problems,
        );
        check_count(
            "circuit_breaker.success_threshold",
            b.success_threshold,
            problems,
        );
        if b.half_open_calls > 1 << 12 {
            problems.push(problem(
                "circuit_breaker.half_open_calls",
                "must be at most 4096",
            ));
        }
        if b.success_threshold > 1 << 12 {
            problems.push(problem(
                "circuit_breaker.success_threshold",
                "must be at most 4096",
            ));
        }
    }
    if let Some(r) = &c.retry {
        check_count("retry.max_attempts", r.max_attempts, problems);
        if !(r.multiplier.is_finite() && r.multiplier >= 1.0) {
            problems.push(problem(
                "retry.multiplier",
                format!("{} must be a finite number >= 1.0", r.multiplier),
            ));
        }
        if r.max_delay < r.delay {
            problems.push(problem(
                "retry.max_delay",
                format!(
                    "{} is below `delay` ({}): the cap must be at least the first delay",
                    format_duration(r.max_delay),
                    format_duration(r.delay)
                ),
            ));
        }
        if let Some(e) = r.max_elapsed {
            check_positive("retry.max_elapsed", e, problems);
        }
    }
    if let Some(t) = c.timeout {
        check_positive("timeout", t, problems);
    }
    if let Some(t) = c.total_timeout {
        check_positive("total_timeout", t, problems);
    }
    if let Some(b) = &c.bulkhead {
        check_count("bulkhead.max_concurrent", b.max_concurrent, problems);
    }
    if let Some(l) = &c.rate_limit {
        check_count("rate_limit.rate", l.rate.permits, problems);
        check_positive("rate_limit.rate", l.rate.per, problems);
        check_count("rate_limit.burst", l.burst, problems);
    }
}

/// Formats a duration the way attributes write them: `250ms`, `2s`, `1m30s`.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return if d.is_zero() {
            "0ms".to_owned()
        } else {
            format!("{}us", d.as_micros())
        };
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// Parses a duration written with units: `"250ms"`, `"2s"`, `"1m30s"`, `"1h"`, `"0ms"`.
///
/// ```
/// use std::time::Duration;
/// use resilience_runtime::parse_duration;
/// assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
/// assert!(parse_duration("30").unwrap_err().contains("unit"));
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty duration: write it with units, e.g. `250ms`, `2s`, `1m30s`".into());
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration `{text}`: expected a number before the unit (e.g. `250ms`, `1m30s`)"
            ));
        }
        let n: u128 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration `{text}`: the number is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let nanos_per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "" => {
                return Err(format!(
                    "invalid duration `{text}`: missing unit; write e.g. `{n}ms` or `{n}s`"
                ))
            }
            other => {
                return Err(format!(
                    "invalid duration `{text}`: unknown unit `{other}`; use `ms`, `s`, `m` or `h`"
                ))
            }
        };
        total = n
            .checked_mul(nanos_per)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("invalid duration `{text}`: too large"))?;
    }
    u64::try_from(total)
        .map(Duration::from_nanos)
        .map_err(|_| format!("invalid duration `{text}`: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_valid() {
        for s in Strategy::ALL {
            let spec = Spec {
                strategy: Some(s),
                breaker: true,
                retry: true,
                ..Spec::EMPTY
            };
            assert_eq!(spec.resolve(), Ok(s.preset()), "{s}");
        }
    }

    #[test]
    fn written_keys_win_over_the_preset() {
        let spec = Spec {
            breaker: true,
            failure_rate: Some(0.3),
            window_calls: Some(8),
            cooldown: Some(Duration::from_secs(5)),
            ..Spec::EMPTY
        };
        let b = spec.resolve().unwrap().breaker.unwrap();
        assert_eq!(
            b.mode,
            BreakerMode::Rate {
                failure_rate: 0.3,
                window: Window::Calls(8),
                min_calls: 8
            }
        );
        assert_eq!(b.cooldown, Duration::from_secs(5));
        assert_eq!(b.success_threshold, 1);
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let spec = Spec {
            breaker: true,
            retry: true,
            failure_rate: Some(1.7),
            half_open_calls: Some(0),
            delay: Some(Duration::from_secs(2)),
            max_delay: Some(Duration::from_secs(1)),
            ..Spec::EMPTY
        };
        let err = spec.resolve().unwrap_err();
        let paths: Vec<_> = err.problems().iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "circuit_breaker.failure_rate",
                "circuit_breaker.half_open_calls",
                "retry.max_delay"
            ]
        );
        assert!(err
            .to_string()
            .contains("circuit_breaker.failure_rate: 1.7 is not in (0, 1]"));
    }

    #[test]
    fn consecutive_and_rate_keys_conflict() {
        let spec = Spec {
            breaker: true,
            failure_threshold: Some(3),
            failure_rate: Some(0.5),
            ..Spec::EMPTY
        };
        assert_eq!(
            spec.resolve().unwrap_err().problems()[0].path,
            "circuit_breaker.failure_threshold"
        );
    }

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(
            parse_duration("1h2m3s4ms"),
            Ok(Duration::from_millis(3_723_004))
        );
        assert!(parse_duration("1x").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
        assert_eq!(format_duration(Duration::from_millis(90_500)), "1m30s500ms");
        assert_eq!(format_duration(Duration::ZERO), "0ms");
    }

    #[test]
    fn rates_parse() {
        assert_eq!("100/s".parse(), Ok(Rate::per_second(100)));
        assert_eq!("5/m".parse(), Ok(Rate::new(5, Duration::from_secs(60))));
        assert!("0/s".parse::<Rate>().is_err());
        assert!("10/week".parse::<Rate>().is_err());
        assert_eq!(Rate::per_second(3).to_string(), "3/s");
    }
}
