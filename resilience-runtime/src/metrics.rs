//! Counters, gauges and histograms through the [`metrics`](https://docs.rs/metrics)
//! facade (feature `metrics`), for any exporter: Prometheus, StatsD, OpenTelemetry...
//!
//! Every series carries the label `service`. The names follow the resilience4j /
//! MicroProfile Fault Tolerance conventions, with the `resilience_` prefix:
//!
//! | name | type | extra labels | what |
//! | --- | --- | --- | --- |
//! | `resilience_calls_total` | counter | `kind` = `successful` / `failed` / `ignored` | outcomes recorded (one per attempt) |
//! | `resilience_slow_calls_total` | counter | | successes slower than `slow_call` |
//! | `resilience_not_permitted_calls_total` | counter | `by` = `circuit_breaker` / `bulkhead` / `rate_limiter` | calls refused without running the body |
//! | `resilience_timeouts_total` | counter | `kind` = `attempt` / `total` | per-attempt `timeout` / whole-call `total_timeout` elapsed |
//! | `resilience_retries_total` | counter | | retries scheduled |
//! | `resilience_fallbacks_total` | counter | | fallback runs |
//! | `resilience_rate_limiter_waits_total` | counter | | calls that waited for a rate-limit permit |
//! | `resilience_rate_limiter_wait_seconds` | histogram | | how long they were told to wait |
//! | `resilience_call_duration_seconds` | histogram | `kind` = `successful` / `failed` | attempt latency, only for services that time their calls (`slow_call` or `record_latency`) |
//! | `resilience_circuit_state` | gauge | `state` = `closed` / `open` / `half_open` / `forced_open` / `disabled` | 1 for the current state, 0 for the others |
//! | `resilience_circuit_transitions_total` | counter | `from`, `to` (state names as above) | breaker state changes |
//! | `resilience_failure_rate` | gauge | | failures / recorded over the window (0..1), `-1` until `min_calls` outcomes are in it |
//! | `resilience_slow_call_rate` | gauge | | slow / recorded over the window (0..1), `-1` until computable |
//! | `resilience_bulkhead_available_slots` | gauge | | bulkhead slots free now |
//! | `resilience_bulkhead_max_slots` | gauge | | the bulkhead's `max_concurrent` |
//!
//! Counters and the duration histogram move on the calling thread, as events
//! happen. The circuit-state gauge moves on every transition. The other gauges
//! (state, rates, bulkhead) are set by [`refresh`]: call it before rendering a
//! scrape. The rate gauges exist only for breakers in rate mode (the slow-call rate
//! only with `slow_call`), the bulkhead gauges only for services with a bulkhead.
//! `-1` follows resilience4j: "not enough calls yet" (a window emptied by a
//! transition or a reset also reads `-1`, rather than keeping a stale ratio).
//!
//! # Installing the recorder
//!
//! A `metrics` handle is bound to the recorder that was installed when the handle
//! was made. A service makes its handles at its first event, so the rule is:
//! **install the recorder before the first call, or call [`rebind`] after
//! installing it.** [`rebind`] remakes every service's handles (those made before
//! kept reporting to the no-op recorder). Then [`describe`] registers the help text
//! and units:
//!
//! ```ignore
//! let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
//! resilience_runtime::metrics::rebind();
//! resilience_runtime::metrics::describe();
//! // on each scrape:
//! resilience_runtime::metrics::refresh();
//! let text = handle.render();
//! ```
//!
//! # Cost
//!
//! A service's counters are made once (all of them, so they render at 0 before
//! their first increment) and kept: recording an event is two atomic loads to find
//! them plus the recorder's own increment, with no hashing of label sets and no
//! lock. Histograms are made at their first sample, so a service that does not time
//! its calls has no duration series. Computed service keys (`service = expr`) each
//! get their own `service` label value: keep their number bounded.

use std::sync::atomic::{
    AtomicPtr, AtomicU64,
    Ordering::{AcqRel, Acquire},
};
use std::sync::{Mutex, OnceLock};

use ::metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Histogram, SharedString, Unit,
};

use crate::breaker::CircuitState;
use crate::config::BreakerMode;
use crate::events::{EventKind, RejectedBy};
use crate::registry::registry;
use crate::ServiceName;

/// `resilience_calls_total{service, kind}`: outcomes recorded, `kind` =
/// `successful`, `failed` or `ignored`.
pub const CALLS_TOTAL: &str = "resilience_calls_total";
/// `resilience_slow_calls_total{service}`: successes slower than `slow_call`.
pub const SLOW_CALLS_TOTAL: &str = "resilience_slow_calls_total";
/// `resilience_not_permitted_calls_total{service, by}`: refusals, `by` =
/// `circuit_breaker`, `bulkhead` or `rate_limiter`.
pub const NOT_PERMITTED_CALLS_TOTAL: &str = "resilience_not_permitted_calls_total";
/// `resilience_timeouts_total{service, kind}`: `kind` = `attempt` or `total`.
pub const TIMEOUTS_TOTAL: &str = "resilience_timeouts_total";
/// `resilience_retries_total{service}`: retries scheduled.
pub const RETRIES_TOTAL: &str = "resilience_retries_total";
/// `resilience_fallbacks_total{service}`: fallback runs.
pub const FALLBACKS_TOTAL: &str = "resilience_fallbacks_total";
/// `resilience_rate_limiter_waits_total{service}`: calls that waited for a permit.
pub const RATE_LIMITER_WAITS_TOTAL: &str = "resilience_rate_limiter_waits_total";
/// `resilience_rate_limiter_wait_seconds{service}`: histogram of those waits.
pub const RATE_LIMITER_WAIT_SECONDS: &str = "resilience_rate_limiter_wait_seconds";
/// `resilience_call_duration_seconds{service, kind}`: histogram of attempt
/// latencies, `kind` = `successful` or `failed`, for services that time calls.
pub const CALL_DURATION_SECONDS: &str = "resilience_call_duration_seconds";
/// `resilience_circuit_state{service, state}`: 1 for the current state, 0 for the
/// others.
pub const CIRCUIT_STATE: &str = "resilience_circuit_state";
/// `resilience_circuit_transitions_total{service, from, to}`: breaker state changes.
pub const CIRCUIT_TRANSITIONS_TOTAL: &str = "resilience_circuit_transitions_total";
/// `resilience_failure_rate{service}`: 0..1 over the window, -1 until computable.
pub const FAILURE_RATE: &str = "resilience_failure_rate";
/// `resilience_slow_call_rate{service}`: 0..1 over the window, -1 until computable.
pub const SLOW_CALL_RATE: &str = "resilience_slow_call_rate";
/// `resilience_bulkhead_available_slots{service}`: bulkhead slots free now.
pub const BULKHEAD_AVAILABLE_SLOTS: &str = "resilience_bulkhead_available_slots";
/// `resilience_bulkhead_max_slots{service}`: the bulkhead's `max_concurrent`.
pub const BULKHEAD_MAX_SLOTS: &str = "resilience_bulkhead_max_slots";

/// The value of the `state` label (and of `from` / `to`) for a state.
pub fn state_label(state: CircuitState) -> &'static str {
    match state {
        CircuitState::Closed => "closed",
        CircuitState::Open => "open",
        CircuitState::HalfOpen => "half_open",
        CircuitState::ForcedOpen => "forced_open",
        CircuitState::Disabled => "disabled",
    }
}

const STATES: [CircuitState; 5] = [
    CircuitState::Closed,
    CircuitState::Open,
    CircuitState::HalfOpen,
    CircuitState::ForcedOpen,
    CircuitState::Disabled,
];

/// Bumped by [`rebind`]: handles made under an older generation are remade.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// One service's handles, made under one generation (one recorder).
struct Handles {
    generation: u64,
    service: SharedString,
    successful: Counter,
    failed: Counter,
    ignored: Counter,
    slow: Counter,
    rejected_breaker: Counter,
    rejected_bulkhead: Counter,
    rejected_limiter: Counter,
    timeout_attempt: Counter,
    timeout_total: Counter,
    retries: Counter,
    fallbacks: Counter,
    rate_waits: Counter,
    /// Made at the first sample, so services that do not time calls have none.
    duration_successful: OnceLock<Histogram>,
    duration_failed: OnceLock<Histogram>,
    rate_wait_seconds: OnceLock<Histogram>,
}

impl Handles {
    fn new(service: &SharedString, generation: u64) -> Self {
        let s = || service.clone();
        Self {
            generation,
            service: s(),
            successful: counter!(CALLS_TOTAL, "service" => s(), "kind" => "successful"),
            failed: counter!(CALLS_TOTAL, "service" => s(), "kind" => "failed"),
            ignored: counter!(CALLS_TOTAL, "service" => s(), "kind" => "ignored"),
            slow: counter!(SLOW_CALLS_TOTAL, "service" => s()),
            rejected_breaker: counter!(NOT_PERMITTED_CALLS_TOTAL, "service" => s(), "by" => "circuit_breaker"),
            rejected_bulkhead: counter!(NOT_PERMITTED_CALLS_TOTAL, "service" => s(), "by" => "bulkhead"),
            rejected_limiter: counter!(NOT_PERMITTED_CALLS_TOTAL, "service" => s(), "by" => "rate_limiter"),
            timeout_attempt: counter!(TIMEOUTS_TOTAL, "service" => s(), "kind" => "attempt"),
            timeout_total: counter!(TIMEOUTS_TOTAL, "service" => s(), "kind" => "total"),
            retries: counter!(RETRIES_TOTAL, "service" => s()),
            fallbacks: counter!(FALLBACKS_TOTAL, "service" => s()),
            rate_waits: counter!(RATE_LIMITER_WAITS_TOTAL, "service" => s()),
            duration_successful: OnceLock::new(),
            duration_failed: OnceLock::new(),
            rate_wait_seconds: OnceLock::new(),
        }
    }

    #[inline]
    fn duration(&self, failed: bool) -> &Histogram {
        let (cell, kind) = if failed {
            (&self.duration_failed, "failed")
        } else {
            (&self.duration_successful, "successful")
        };
        cell.get_or_init(
            || histogram!(CALL_DURATION_SECONDS, "service" => self.service.clone(), "kind" => kind),
        )
    }

    #[inline]
    fn rate_wait(&self) -> &Histogram {
        self.rate_wait_seconds.get_or_init(
            || histogram!(RATE_LIMITER_WAIT_SECONDS, "service" => self.service.clone()),
        )
    }
}

/// Per-service metric handles: made at the service's first event and remade after
/// [`rebind`].
pub(crate) struct ServiceMetrics {
    service: SharedString,
    /// The handles of the newest generation seen; null until the first event.
    current: AtomicPtr<Handles>,
    /// Handles replaced by [`rebind`]: a call may still be using them, so they live
    /// as long as the service (one set per rebind, and rebinds are rare). Boxed:
    /// readers hold their address, which a growing `Vec<Handles>` would move.
    #[allow(clippy::vec_box)]
    retired: Mutex<Vec<Box<Handles>>>,
}

impl ServiceMetrics {
    pub(crate) fn new(service: &ServiceName) -> Self {
        Self {
            service: SharedString::from(service.as_str().to_owned()),
            current: AtomicPtr::new(std::ptr::null_mut()),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// The handles of the current generation, made if needed.
    #[inline]
    fn handles(&self) -> &Handles {
        let generation = GENERATION.load(Acquire);
        // SAFETY: `current` is null or a pointer from `Box::into_raw` that is freed
        // only with `self` (a replaced one moves to `retired`), and `&self` keeps
        // `self` alive.
        match unsafe { self.current.load(Acquire).as_ref() } {
            Some(h) if h.generation >= generation => h,
            _ => self.bind(generation),
        }
    }

    #[cold]
    #[inline(never)]
    fn bind(&self, generation: u64) -> &Handles {
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: as in `handles`; the lock serialises replacements.
        if let Some(h) = unsafe { self.current.load(Acquire).as_ref() } {
            if h.generation >= generation {
                return h;
            }
        }
        let fresh = Box::into_raw(Box::new(Handles::new(&self.service, generation)));
        let old = self.current.swap(fresh, AcqRel);
        if !old.is_null() {
            // SAFETY: `old` came from `Box::into_raw` and is no longer reachable
            // from `current`; calls still reading it keep `self` alive, and
            // `retired` frees it only with `self`.
            retired.push(unsafe { Box::from_raw(old) });
        }
        // SAFETY: just made; freed only with `self`.
        unsafe { &*fresh }
    }

    /// Counts one event. Called on the calling thread for every event but state
    /// transitions (see [`transition`]).
    #[inline]
    pub(crate) fn record(&self, kind: &EventKind) {
        let h = self.handles();
        match *kind {
            EventKind::Succeeded { latency } => {
                h.successful.increment(1);
                if let Some(l) = latency {
                    h.duration(false).record(l.as_secs_f64());
                }
            }
            EventKind::Failed { latency } => {
                h.failed.increment(1);
                if let Some(l) = latency {
                    h.duration(true).record(l.as_secs_f64());
                }
            }
            EventKind::SlowCall { .. } => h.slow.increment(1),
            EventKind::Ignored => h.ignored.increment(1),
            EventKind::Rejected { by } => match by {
                RejectedBy::CircuitBreaker => h.rejected_breaker.increment(1),
                RejectedBy::Bulkhead => h.rejected_bulkhead.increment(1),
                RejectedBy::RateLimiter => h.rejected_limiter.increment(1),
            },
            EventKind::Timeout { total, .. } => {
                if total {
                    h.timeout_total.increment(1)
                } else {
                    h.timeout_attempt.increment(1)
                }
            }
            EventKind::RetryScheduled { .. } => h.retries.increment(1),
            EventKind::RateLimitWaited { wait } => {
                h.rate_waits.increment(1);
                h.rate_wait().record(wait.as_secs_f64());
            }
            EventKind::FallbackUsed => h.fallbacks.increment(1),
            // Counted by `transition`, which breakers call directly.
            EventKind::StateTransition { .. } => {}
        }
    }
}

impl Drop for ServiceMetrics {
    fn drop(&mut self) {
        let p = *self.current.get_mut();
        if !p.is_null() {
            // SAFETY: from `Box::into_raw`; with `&mut self` nobody reads it.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

/// A breaker changed state: counts the transition and moves the state gauge.
pub(crate) fn transition(service: &ServiceName, from: CircuitState, to: CircuitState) {
    let s = SharedString::from(service.as_str().to_owned());
    counter!(
        CIRCUIT_TRANSITIONS_TOTAL,
        "service" => s.clone(),
        "from" => state_label(from),
        "to" => state_label(to)
    )
    .increment(1);
    set_state(&s, to);
}

fn set_state(service: &SharedString, state: CircuitState) {
    for s in STATES {
        gauge!(CIRCUIT_STATE, "service" => service.clone(), "state" => state_label(s))
            .set(if s == state { 1.0 } else { 0.0 });
    }
}

/// Remakes every service's handles against the recorder installed now. Call it
/// once after installing a recorder if any service was registered (or called)
/// before; services that have not recorded anything yet need nothing.
///
/// Also makes the handles of every registered service, so their counters render
/// at 0 before their first event.
pub fn rebind() {
    let generation = GENERATION.fetch_add(1, AcqRel) + 1;
    for s in registry().all() {
        s.metrics.bind(generation);
    }
}

/// Sets the gauges of every registered service: circuit state, failure and
/// slow-call rates, bulkhead slots. Call it before rendering a scrape. It also makes
/// the handles of services that have had no event yet, so their counters render
/// at 0.
pub fn refresh() {
    for s in registry().all() {
        let m = &s.metrics;
        m.handles();
        let p = s.policies();
        if let Some(b) = p.breaker() {
            set_state(&m.service, b.state());
            let config = b.config();
            if matches!(config.mode, BreakerMode::Rate { .. }) {
                gauge!(FAILURE_RATE, "service" => m.service.clone())
                    .set(b.failure_rate().unwrap_or(-1.0));
                if config.slow_call.is_some() {
                    gauge!(SLOW_CALL_RATE, "service" => m.service.clone())
                        .set(b.slow_call_rate().unwrap_or(-1.0));
                }
            }
        }
        if let (Some(b), Some(c)) = (p.bulkhead.as_deref(), p.config.bulkhead) {
            gauge!(BULKHEAD_AVAILABLE_SLOTS, "service" => m.service.clone())
                .set(f64::from(b.available()));
            gauge!(BULKHEAD_MAX_SLOTS, "service" => m.service.clone())
                .set(f64::from(c.max_concurrent));
        }
    }
}

/// Registers the description and unit of every metric with the installed recorder
/// (exporters show them as `# HELP` lines). Call it once after installing the
/// recorder.
pub fn describe() {
    describe_counter!(
        CALLS_TOTAL,
        Unit::Count,
        "Outcomes recorded, one per attempt: kind = successful, failed or ignored."
    );
    describe_counter!(
        SLOW_CALLS_TOTAL,
        Unit::Count,
        "Successful calls slower than the breaker's slow_call threshold."
    );
    describe_counter!(
        NOT_PERMITTED_CALLS_TOTAL,
        Unit::Count,
        "Calls refused without running: by = circuit_breaker, bulkhead or rate_limiter."
    );
    describe_counter!(
        TIMEOUTS_TOTAL,
        Unit::Count,
        "Timeouts: kind = attempt (per-attempt timeout) or total (total_timeout)."
    );
    describe_counter!(RETRIES_TOTAL, Unit::Count, "Retries scheduled.");
    describe_counter!(FALLBACKS_TOTAL, Unit::Count, "Times the fallback ran.");
    describe_counter!(
        RATE_LIMITER_WAITS_TOTAL,
        Unit::Count,
        "Calls that waited for a rate-limit permit."
    );
    describe_histogram!(
        RATE_LIMITER_WAIT_SECONDS,
        Unit::Seconds,
        "How long calls waited for a rate-limit permit."
    );
    describe_histogram!(
        CALL_DURATION_SECONDS,
        Unit::Seconds,
        "Attempt latency (services with slow_call or record_latency): kind = successful or failed."
    );
    describe_gauge!(
        CIRCUIT_STATE,
        "1 for the breaker's current state, 0 for the others: state = closed, open, half_open, forced_open or disabled."
    );
    describe_counter!(
        CIRCUIT_TRANSITIONS_TOTAL,
        Unit::Count,
        "Breaker state changes, labelled from and to."
    );
    describe_gauge!(
        FAILURE_RATE,
        "Failures / recorded calls over the breaker's window (0..1); -1 until min_calls outcomes are in it."
    );
    describe_gauge!(
        SLOW_CALL_RATE,
        "Slow calls / recorded calls over the breaker's window (0..1); -1 until min_calls outcomes are in it."
    );
    describe_gauge!(
        BULKHEAD_AVAILABLE_SLOTS,
        Unit::Count,
        "Bulkhead slots free now."
    );
    describe_gauge!(
        BULKHEAD_MAX_SLOTS,
        Unit::Count,
        "The bulkhead's max_concurrent."
    );
}
