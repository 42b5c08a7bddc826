//! Status and control of the registered services.

use std::time::Duration;

use crate::breaker::CircuitState;
use crate::counters::Counter;
use crate::events::TransitionReason;
use crate::registry::registry;
use crate::service::Service;

/// A service's state and counters since start or the last reset.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ServiceStatus {
    /// The service's name.
    pub service: String,
    /// The breaker's state (`Closed` for a service without a breaker).
    pub state: CircuitState,
    /// Outcomes recorded: `successes + failures + ignored`.
    pub calls: u64,
    /// Calls that succeeded (or whose error `record_if` did not count).
    pub successes: u64,
    /// Calls that failed, timeouts included.
    pub failures: u64,
    /// Calls whose error `ignore_if` accepted.
    pub ignored: u64,
    /// Successes slower than `slow_call`.
    pub slow_calls: u64,
    /// Calls refused by the breaker, bulkhead or rate limiter.
    pub rejections: u64,
    /// Attempts and whole calls that timed out.
    pub timeouts: u64,
    /// Attempts after the first (also ones the breaker then rejected).
    pub retries: u64,
    /// Times the fallback ran.
    pub fallbacks: u64,
    /// Failures / recorded calls over the current window, once it can be computed
    /// (rate mode with at least `min_calls` outcomes in the window).
    pub failure_rate: Option<f64>,
    /// The kill switch is on: every policy but the fallback passes calls through.
    pub kill_switch: bool,
}

impl Service {
    /// This service's status now.
    pub fn status(&self) -> ServiceStatus {
        let c = self.counters();
        let successes = c.get(Counter::Successes);
        let failures = c.get(Counter::Failures);
        let ignored = c.get(Counter::Ignored);
        ServiceStatus {
            service: self.name().to_owned(),
            state: self.state(),
            calls: successes + failures + ignored,
            successes,
            failures,
            ignored,
            slow_calls: c.get(Counter::SlowCalls),
            rejections: c.get(Counter::Rejections),
            timeouts: c.get(Counter::Timeouts),
            retries: c.get(Counter::Retries),
            fallbacks: c.get(Counter::Fallbacks),
            failure_rate: self.policies().breaker().and_then(|b| b.failure_rate()),
            kill_switch: crate::live::kill_switch(),
        }
    }

    /// Slow calls / recorded calls over the current window, once it can be computed.
    pub fn slow_call_rate(&self) -> Option<f64> {
        self.policies().breaker().and_then(|b| b.slow_call_rate())
    }

    /// Time since the breaker last changed state (`None`: never, or no breaker).
    pub fn since_transition(&self) -> Option<Duration> {
        self.policies().breaker().and_then(|b| b.since_transition())
    }

    /// Whether an open breaker here makes the application unhealthy: the
    /// `critical` strategy, or `critical = true` in live configuration.
    pub fn is_critical(&self) -> bool {
        self.policies().critical
    }

    /// Bulkhead slots free now (`None` without a bulkhead). All of them at rest:
    /// a cancelled or panicking call gives its slot back.
    pub fn bulkhead_available(&self) -> Option<u32> {
        self.policies().bulkhead.as_deref().map(|b| b.available())
    }

    /// Back to closed with an empty window, the first cooldown, and zeroed counters.
    pub fn reset(&self) {
        if let Some(b) = self.policies().breaker() {
            b.force(CircuitState::Closed, TransitionReason::Forced);
        }
        self.counters().reset();
    }
}

/// The status of `service`, if it has been called.
///
/// ```
/// assert!(resilience_runtime::status("never-called").is_none());
/// ```
pub fn status(service: &str) -> Option<ServiceStatus> {
    registry().get(service).map(|s| s.status())
}

/// Every registered service's status, sorted by name.
pub fn statuses() -> Vec<ServiceStatus> {
    let mut all: Vec<_> = registry().all().iter().map(|s| s.status()).collect();
    all.sort_by(|a, b| a.service.cmp(&b.service));
    all
}

/// Control of one service's circuit breaker.
#[derive(Clone, Debug)]
pub struct BreakerHandle {
    service: crate::ServiceRef,
}

/// The breaker of `service`, if the service has been called and has a breaker.
pub fn breaker(service: &str) -> Option<BreakerHandle> {
    registry()
        .get(service)
        .filter(|s| s.policies().breaker().is_some())
        .map(|service| BreakerHandle { service })
}

/// `reset()` on every service: breakers closed, windows emptied, counters zeroed.
pub fn reset_all() {
    for s in registry().all() {
        s.reset();
    }
}

impl BreakerHandle {
    /// The breaker's state now.
    pub fn state(&self) -> CircuitState {
        self.service.state()
    }
    /// Rejects every call until `reset()`; never half-opens by itself.
    pub fn force_open(&self) {
        self.force(CircuitState::ForcedOpen);
    }
    /// Lets every call through and never opens; outcomes are still counted.
    pub fn disable(&self) {
        self.force(CircuitState::Disabled);
    }
    /// Back to closed with an empty window, the first cooldown and zeroed counters.
    pub fn reset(&self) {
        self.service.reset();
    }
    fn force(&self, to: CircuitState) {
        if let Some(b) = self.service.policies().breaker() {
            b.force(to, TransitionReason::Forced);
        }
    }
}

/// What a health report needs of one service.
pub(crate) struct HealthInput {
    pub status: ServiceStatus,
    pub since_transition: Option<Duration>,
    pub critical: bool,
    pub kill_switch: bool,
}

/// Every service, sorted by name.
pub(crate) fn health_inputs() -> Vec<HealthInput> {
    let mut all: Vec<_> = registry()
        .all()
        .iter()
        .map(|s| HealthInput {
            status: s.status(),
            since_transition: s.since_transition(),
            critical: s.is_critical(),
            kill_switch: crate::live::kill_switch(),
        })
        .collect();
    all.sort_by(|a, b| a.status.service.cmp(&b.status.service));
    all
}
