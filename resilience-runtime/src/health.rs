//! Health reports: one overall verdict for a readiness or liveness endpoint, built
//! from every service's circuit breaker and from custom checks (a database ping, a
//! queue's depth).
//!
//! # The rule
//!
//! The overall status is the worst that any row below gives:
//!
//! | condition | status |
//! | --- | --- |
//! | a **critical** service's breaker is `Open`, `HalfOpen` or `ForcedOpen` | unhealthy |
//! | a **critical** custom check fails, panics or times out | unhealthy |
//! | any other service's breaker is `Open`, `HalfOpen` or `ForcedOpen` | degraded |
//! | any breaker is `Disabled` (an operator turned protection off) | degraded |
//! | a non-critical custom check fails, panics or times out | degraded |
//! | the kill switch is on (every policy bypassed) | degraded |
//! | otherwise (every breaker `Closed`; services without a breaker count as `Closed`) | healthy |
//!
//! A service is critical when its strategy is `critical` or its live configuration
//! says `critical = true`. Each service and each check also carries its own status,
//! by the same rule.
//!
//! [`HealthReport::http_status_code`] maps the verdict to what load balancers and
//! orchestrators expect from a health endpoint: `200` for healthy and degraded (the
//! instance still serves, with reduced protection or an optional dependency down),
//! `503` for unhealthy (take it out of rotation).
//!
//! # Custom checks
//!
//! ```
//! use std::time::Duration;
//! use resilience_runtime::{health_with, HealthChecks, HealthStatus};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let checks = HealthChecks::new()
//!     .timeout(Duration::from_secs(2))
//!     .check_fn("database", true, || async { Ok(()) })
//!     .check_fn("cache", false, || async { Err("cache: connection refused".to_owned()) })
//!     .check(
//!         HealthChecks::named("queues")
//!             .check_fn("orders", false, || async { Ok(()) })
//!             .check_fn("emails", false, || async { Ok(()) }),
//!     );
//! let report = health_with(&checks).await;
//! assert_eq!(report.checks.len(), 3);
//! assert_eq!(report.checks[1].status, HealthStatus::Degraded);
//! assert!(report.status >= HealthStatus::Degraded);
//! # }
//! ```
//!
//! Checks run concurrently, each under its timeout (`tokio::time::timeout`, so
//! [`health_with`] needs a tokio runtime with the time driver, and tests can use a
//! paused clock). A check that panics or does not answer in time is reported as
//! failed, with the panic message or `did not answer within 5s`; it never takes the
//! report down (the panic hook still prints the panic, as for any caught panic).
//!
//! # JSON
//!
//! Every report type is `serde::Serialize`. Statuses serialize in lowercase
//! (`"healthy"`, `"degraded"`, `"unhealthy"`), breaker states as in
//! [`crate::ServiceStatus`] (`"Closed"`, `"Open"`, ...), a service's time since its
//! last transition as `since_transition_secs` (seconds, `f64`, `null` if it never
//! changed state) and a check's duration as `duration_ms` (milliseconds, `f64`).
//! A composite check's children are under `checks` (left out when there are none).
//!
//! ```json
//! {
//!   "status": "degraded",
//!   "kill_switch": false,
//!   "services": [
//!     { "service": "payments", "state": "Open", "failure_rate": 0.6,
//!       "since_transition_secs": 12.5, "critical": false, "status": "degraded" }
//!   ],
//!   "checks": [
//!     { "name": "database", "status": "healthy", "critical": true,
//!       "duration_ms": 3.2, "error": null }
//!   ]
//! }
//! ```

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::breaker::CircuitState;
use crate::config::format_duration;
use crate::status::{health_inputs, HealthInput};

/// A boxed, sendable future: what [`HealthCheck::check`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The verdict of a health report, a service or a check. Ordered from best to
/// worst, so the worst of several is their `max()`.
///
/// Serializes in lowercase: `"healthy"`, `"degraded"`, `"unhealthy"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Everything works and every protection is in force.
    Healthy,
    /// Still serving, but something optional is down or protection is reduced.
    Degraded,
    /// Something the instance cannot work without is down.
    Unhealthy,
}

impl HealthStatus {
    /// The lowercase name, as serialized.
    pub const fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }

    /// `200` for healthy and degraded, `503` for unhealthy: what load balancers and
    /// orchestrators expect (only an unhealthy instance is taken out of rotation).
    pub const fn http_status_code(self) -> u16 {
        match self {
            HealthStatus::Healthy | HealthStatus::Degraded => 200,
            HealthStatus::Unhealthy => 503,
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One service's part of a [`HealthReport`].
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ServiceHealth {
    /// The service's name.
    pub service: String,
    /// Its breaker's state (`Closed` for a service without a breaker).
    pub state: CircuitState,
    /// Failures / recorded calls over the current window, once it can be computed.
    pub failure_rate: Option<f64>,
    /// Time since the breaker's last change of state (`None`: it never changed).
    /// Serialized as `since_transition_secs`, in seconds.
    #[serde(rename = "since_transition_secs", serialize_with = "opt_secs")]
    pub since_transition: Option<Duration>,
    /// Whether the service is critical (strategy `critical`, or `critical = true`).
    pub critical: bool,
    /// This service's verdict: healthy when `Closed`; degraded when `Disabled`, or
    /// when not critical and `Open`, `HalfOpen` or `ForcedOpen`; unhealthy when
    /// critical and `Open`, `HalfOpen` or `ForcedOpen`.
    pub status: HealthStatus,
}

/// One custom check's part of a [`HealthReport`].
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CheckReport {
    /// The check's name.
    pub name: String,
    /// Healthy when it passed; when it failed, unhealthy if critical, else degraded.
    /// A composite that passed is degraded when one of its children failed.
    pub status: HealthStatus,
    /// Whether the check is critical.
    pub critical: bool,
    /// How long it ran (tokio's clock). Serialized as `duration_ms`, in milliseconds.
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
    /// Why it failed (the check's own message, the panic message, or
    /// `did not answer within 5s`); for a composite, its failing children.
    pub error: Option<String>,
    /// A composite's children (empty for a plain check; left out of JSON then).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckReport>,
    /// Whether the check failed, as opposed to passed with degraded children.
    #[serde(skip)]
    failed: bool,
}

impl CheckReport {
    /// Whether the check failed (a composite fails when a critical child fails).
    pub fn failed(&self) -> bool {
        self.failed
    }
}

/// The whole report: the verdict, and what it was made of.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct HealthReport {
    /// The worst of everything below (see [`health`] for the rule).
    pub status: HealthStatus,
    /// Whether the global kill switch is on (every policy bypassed).
    pub kill_switch: bool,
    /// Every registered service, sorted by name.
    pub services: Vec<ServiceHealth>,
    /// Every custom check, in the order they were added.
    pub checks: Vec<CheckReport>,
}

impl HealthReport {
    /// Whether the status is [`HealthStatus::Healthy`].
    pub fn is_healthy(&self) -> bool {
        self.status == HealthStatus::Healthy
    }

    /// `200` for healthy and degraded, `503` for unhealthy: what load balancers and
    /// orchestrators expect from a health endpoint (a degraded instance still
    /// serves; only an unhealthy one is taken out of rotation).
    pub fn http_status_code(&self) -> u16 {
        self.status.http_status_code()
    }

    /// The entry of `service`, if it is registered.
    pub fn service(&self, service: &str) -> Option<&ServiceHealth> {
        self.services.iter().find(|s| s.service == service)
    }

    /// The top-level check named `name`.
    pub fn check(&self, name: &str) -> Option<&CheckReport> {
        self.checks.iter().find(|c| c.name == name)
    }
}

/// The health of every registered service, by the rule below.
///
/// | condition | status |
/// | --- | --- |
/// | a critical service's breaker is `Open`, `HalfOpen` or `ForcedOpen` | unhealthy |
/// | any other service's breaker is `Open`, `HalfOpen` or `ForcedOpen` | degraded |
/// | any breaker is `Disabled` | degraded |
/// | the kill switch is on | degraded |
/// | otherwise | healthy |
///
/// [`health_with`] adds custom checks (a failing critical check is unhealthy, any
/// other failing check degraded).
///
/// ```
/// let report = resilience_runtime::health();
/// assert_eq!(report.http_status_code(), 200);
/// assert!(report.checks.is_empty());
/// ```
pub fn health() -> HealthReport {
    build_report(health_inputs(), Vec::new())
}

/// [`health`] plus the custom `checks`, run concurrently, each under its timeout.
/// Needs a tokio runtime with the time driver.
pub async fn health_with(checks: &HealthChecks) -> HealthReport {
    let reports = checks.run_children().await;
    build_report(health_inputs(), reports)
}

fn build_report(inputs: Vec<HealthInput>, checks: Vec<CheckReport>) -> HealthReport {
    let kill_switch = crate::live::kill_switch() || inputs.iter().any(|i| i.kill_switch);
    let mut status = assess(&inputs, &checks);
    if kill_switch {
        status = status.max(HealthStatus::Degraded);
    }
    let services = inputs
        .into_iter()
        .map(|i| ServiceHealth {
            status: service_status(i.status.state, i.critical),
            service: i.status.service,
            state: i.status.state,
            failure_rate: i.status.failure_rate,
            since_transition: i.since_transition,
            critical: i.critical,
        })
        .collect();
    HealthReport {
        status,
        kill_switch,
        services,
        checks,
    }
}

/// One service's verdict from its breaker's state.
fn service_status(state: CircuitState, critical: bool) -> HealthStatus {
    match state {
        CircuitState::Closed => HealthStatus::Healthy,
        CircuitState::Disabled => HealthStatus::Degraded,
        CircuitState::Open | CircuitState::HalfOpen | CircuitState::ForcedOpen => {
            if critical {
                HealthStatus::Unhealthy
            } else {
                HealthStatus::Degraded
            }
        }
    }
}

/// The overall verdict: the worst of the services', the checks' and the kill
/// switch's (degraded when on).
fn assess(inputs: &[HealthInput], checks: &[CheckReport]) -> HealthStatus {
    let services = inputs.iter().map(|i| {
        let s = service_status(i.status.state, i.critical);
        if i.kill_switch {
            s.max(HealthStatus::Degraded)
        } else {
            s
        }
    });
    services
        .chain(checks.iter().map(|c| c.status))
        .max()
        .unwrap_or(HealthStatus::Healthy)
}

fn opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// A custom health check: a database ping, a queue's depth, a disk's free space.
///
/// ```
/// use resilience_runtime::{BoxFuture, HealthCheck};
///
/// struct Disk;
/// impl HealthCheck for Disk {
///     fn name(&self) -> &str { "disk" }
///     fn critical(&self) -> bool { true }
///     fn check(&self) -> BoxFuture<'_, Result<(), String>> {
///         Box::pin(async { Err("disk: 98% full, free space under /var/log".to_owned()) })
///     }
/// }
/// ```
pub trait HealthCheck: Send + Sync {
    /// The name in the report.
    fn name(&self) -> &str;
    /// Whether a failure makes the whole report unhealthy (otherwise degraded).
    fn critical(&self) -> bool {
        false
    }
    /// Runs the check. `Err` carries a reason a person can act on.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// How long a check may run before it counts as failed, unless set otherwise.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A set of custom checks, run concurrently, each under its timeout.
///
/// Pass it to [`health_with`], or nest it in another set: it is itself a
/// [`HealthCheck`] (named with [`HealthChecks::named`]) that runs its children and
/// fails when a critical child fails. Nested sets are reported with their children.
/// A nested set is critical when [`HealthChecks::critical`] says so or, if not set,
/// when any of its children is critical. Its children run under its own
/// [`HealthChecks::timeout`]; the set as a whole has no timeout of its own unless
/// added with [`HealthChecks::check_with_timeout`].
#[derive(Clone)]
#[must_use]
pub struct HealthChecks {
    name: String,
    critical: Option<bool>,
    timeout: Duration,
    children: Vec<Child>,
}

#[derive(Clone)]
struct Child {
    node: Node,
    timeout: Option<Duration>,
}

#[derive(Clone)]
enum Node {
    Leaf(Arc<dyn HealthCheck>),
    Group(Arc<HealthChecks>),
}

impl Node {
    fn name(&self) -> &str {
        match self {
            Node::Leaf(c) => c.name(),
            Node::Group(g) => &g.name,
        }
    }
    fn critical(&self) -> bool {
        match self {
            Node::Leaf(c) => c.critical(),
            Node::Group(g) => HealthCheck::critical(&**g),
        }
    }
}

impl fmt::Debug for HealthChecks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthChecks")
            .field("name", &self.name)
            .field("critical", &HealthCheck::critical(self))
            .field("timeout", &self.timeout)
            .field("checks", &self.children)
            .finish()
    }
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Node::Group(g) => fmt::Debug::fmt(g, f),
            Node::Leaf(c) => f
                .debug_struct("HealthCheck")
                .field("name", &c.name())
                .field("critical", &c.critical())
                .field("timeout", &self.timeout)
                .finish(),
        }
    }
}

impl Default for HealthChecks {
    fn default() -> Self {
        HealthChecks::new()
    }
}

impl HealthChecks {
    /// No checks yet, named `checks`, with the default timeout of 5 s per check.
    pub fn new() -> Self {
        HealthChecks::named("checks")
    }

    /// No checks yet, with the name this set has when nested in another.
    pub fn named(name: impl Into<String>) -> Self {
        HealthChecks {
            name: name.into(),
            critical: None,
            timeout: DEFAULT_CHECK_TIMEOUT,
            children: Vec::new(),
        }
    }

    /// The timeout of each check added without its own (default 5 s), also those
    /// added before this call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether this set, nested in another, is critical (default: whether any of
    /// its children is).
    pub fn critical(mut self, critical: bool) -> Self {
        self.critical = Some(critical);
        self
    }

    /// Adds a check, run under this set's timeout. A nested [`HealthChecks`] runs
    /// its children under their own timeouts and is reported with them.
    pub fn check(self, check: impl HealthCheck + 'static) -> Self {
        self.add(check, None)
    }

    /// Adds a check with its own timeout.
    pub fn check_with_timeout(self, check: impl HealthCheck + 'static, timeout: Duration) -> Self {
        self.add(check, Some(timeout))
    }

    /// Adds a check written as a closure returning a future:
    /// `.check_fn("db", true, move || { let pool = pool.clone(); async move { .. } })`.
    pub fn check_fn<F, Fut>(self, name: impl Into<String>, critical: bool, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.check(FnCheck {
            name: name.into(),
            critical,
            f,
        })
    }

    /// The checks added so far (the top level only).
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Whether no check was added.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    fn add<C: HealthCheck + 'static>(mut self, check: C, timeout: Option<Duration>) -> Self {
        let boxed: Box<dyn Any> = Box::new(check);
        let node = match boxed.downcast::<HealthChecks>() {
            Ok(group) => Node::Group(Arc::from(group)),
            Err(other) => {
                let check = *other
                    .downcast::<C>()
                    .unwrap_or_else(|_| unreachable!("the box holds a C"));
                Node::Leaf(Arc::new(check))
            }
        };
        self.children.push(Child { node, timeout });
        self
    }

    /// Runs every child concurrently, reports in the order they were added.
    fn run_children(&self) -> BoxFuture<'_, Vec<CheckReport>> {
        let runs = self
            .children
            .iter()
            .map(|c| run_child(c, self.timeout))
            .collect();
        Box::pin(JoinAll::new(runs))
    }
}

impl HealthCheck for HealthChecks {
    fn name(&self) -> &str {
        &self.name
    }
    fn critical(&self) -> bool {
        self.critical
            .unwrap_or_else(|| self.children.iter().any(|c| c.node.critical()))
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let reports = self.run_children().await;
            if reports.iter().any(|r| r.critical && r.failed) {
                Err(summary(&reports))
            } else {
                Ok(())
            }
        })
    }
}

/// `name: error` of each child that is not healthy.
fn summary(reports: &[CheckReport]) -> String {
    let mut out = String::new();
    for r in reports.iter().filter(|r| r.status != HealthStatus::Healthy) {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(&r.name);
        out.push_str(": ");
        out.push_str(r.error.as_deref().unwrap_or("failed"));
    }
    out
}

fn run_child(child: &Child, default_timeout: Duration) -> BoxFuture<'_, CheckReport> {
    let name = child.node.name().to_owned();
    let critical = child.node.critical();
    let limit = match (&child.node, child.timeout) {
        (_, Some(t)) => Some(t),
        (Node::Leaf(_), None) => Some(default_timeout),
        // A nested set's children have their own timeouts.
        (Node::Group(_), None) => None,
    };
    Box::pin(async move {
        let start = tokio::time::Instant::now();
        let work: BoxFuture<'_, (Result<(), String>, Vec<CheckReport>)> = match &child.node {
            Node::Leaf(c) => Box::pin(async move { (c.check().await, Vec::new()) }),
            Node::Group(g) => Box::pin(async move {
                let reports = g.run_children().await;
                let failed = reports.iter().any(|r| r.critical && r.failed);
                let result = if failed {
                    Err(summary(&reports))
                } else {
                    Ok(())
                };
                (result, reports)
            }),
        };
        let outcome = CatchUnwind(Box::pin(async move {
            match limit {
                Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                    (
                        Err(format!("did not answer within {}", format_duration(limit))),
                        Vec::new(),
                    )
                }),
                None => work.await,
            }
        }))
        .await;
        let (result, checks) =
            outcome.unwrap_or_else(|msg| (Err(format!("panicked: {msg}")), Vec::new()));
        let duration = start.elapsed();
        let failed = result.is_err();
        let status = if failed {
            if critical {
                HealthStatus::Unhealthy
            } else {
                HealthStatus::Degraded
            }
        } else if checks.iter().any(|c| c.status != HealthStatus::Healthy) {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        };
        let error = match result {
            Err(e) => Some(e),
            Ok(()) if status != HealthStatus::Healthy => Some(summary(&checks)),
            Ok(()) => None,
        };
        CheckReport {
            name,
            status,
            critical,
            duration,
            error,
            checks,
            failed,
        }
    })
}

/// A check written as a closure.
struct FnCheck<F> {
    name: String,
    critical: bool,
    f: F,
}

impl<F, Fut> HealthCheck for FnCheck<F>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }
    fn critical(&self) -> bool {
        self.critical
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin((self.f)())
    }
}

/// Polls the futures together; their outputs in order once all are done.
struct JoinAll<'a, T> {
    slots: Vec<Slot<'a, T>>,
}

enum Slot<'a, T> {
    Running(BoxFuture<'a, T>),
    Done(T),
    Taken,
}

impl<'a, T> JoinAll<'a, T> {
    fn new(futures: Vec<BoxFuture<'a, T>>) -> Self {
        JoinAll {
            slots: futures.into_iter().map(Slot::Running).collect(),
        }
    }
}

// Every field is boxed or owned, never pinned in place.
impl<T> Unpin for JoinAll<'_, T> {}

impl<T> Future for JoinAll<'_, T> {
    type Output = Vec<T>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Vec<T>> {
        let mut pending = false;
        for slot in &mut self.slots {
            if let Slot::Running(f) = slot {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Slot::Done(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            return Poll::Pending;
        }
        let out = self
            .slots
            .iter_mut()
            .map(|s| match std::mem::replace(s, Slot::Taken) {
                Slot::Done(v) => v,
                _ => unreachable!("every slot is done"),
            })
            .collect();
        Poll::Ready(out)
    }
}

/// A future whose panic is caught and returned as its message.
struct CatchUnwind<'a, T>(BoxFuture<'a, T>);

impl<T> Future for CatchUnwind<'_, T> {
    type Output = Result<T, String>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_message(&*payload))),
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::ServiceStatus;

    fn input(state: CircuitState, critical: bool, kill_switch: bool) -> HealthInput {
        HealthInput {
            status: ServiceStatus {
                service: "s".into(),
                state,
                calls: 0,
                successes: 0,
                failures: 0,
                ignored: 0,
                slow_calls: 0,
                rejections: 0,
                timeouts: 0,
                retries: 0,
                fallbacks: 0,
                failure_rate: None,
                kill_switch,
            },
            since_transition: None,
            critical,
            kill_switch,
        }
    }

    fn check(status: HealthStatus, critical: bool) -> CheckReport {
        CheckReport {
            name: "c".into(),
            status,
            critical,
            duration: Duration::ZERO,
            error: None,
            checks: Vec::new(),
            failed: status != HealthStatus::Healthy,
        }
    }

    use CircuitState::*;
    use HealthStatus::*;

    #[test]
    fn nothing_is_healthy() {
        assert_eq!(assess(&[], &[]), Healthy);
    }

    #[test]
    fn closed_is_healthy_critical_or_not() {
        let inputs = [input(Closed, false, false), input(Closed, true, false)];
        assert_eq!(assess(&inputs, &[]), Healthy);
    }

    #[test]
    fn a_non_critical_breaker_not_closed_is_degraded() {
        for state in [Open, HalfOpen, ForcedOpen] {
            let inputs = [input(Closed, true, false), input(state, false, false)];
            assert_eq!(assess(&inputs, &[]), Degraded, "{state:?}");
            assert_eq!(service_status(state, false), Degraded);
        }
    }

    #[test]
    fn a_critical_breaker_not_closed_is_unhealthy() {
        for state in [Open, HalfOpen, ForcedOpen] {
            let inputs = [input(Open, false, false), input(state, true, false)];
            assert_eq!(assess(&inputs, &[]), Unhealthy, "{state:?}");
            assert_eq!(service_status(state, true), Unhealthy);
        }
    }

    #[test]
    fn disabled_is_degraded_even_when_critical() {
        assert_eq!(assess(&[input(Disabled, false, false)], &[]), Degraded);
        assert_eq!(assess(&[input(Disabled, true, false)], &[]), Degraded);
    }

    #[test]
    fn the_kill_switch_is_degraded_but_never_hides_worse() {
        assert_eq!(assess(&[input(Closed, true, true)], &[]), Degraded);
        assert_eq!(assess(&[input(Open, true, true)], &[]), Unhealthy);
        let r = build_report(vec![input(Closed, false, true)], Vec::new());
        assert!(r.kill_switch);
        assert_eq!(r.status, Degraded);
        // The service's own entry reflects its breaker only.
        assert_eq!(r.services[0].status, Healthy);
    }

    #[test]
    fn checks_count_by_their_status() {
        let closed = [input(Closed, true, false)];
        assert_eq!(assess(&closed, &[check(Healthy, true)]), Healthy);
        assert_eq!(
            assess(&closed, &[check(Healthy, true), check(Degraded, false)]),
            Degraded
        );
        assert_eq!(
            assess(&closed, &[check(Degraded, false), check(Unhealthy, true)]),
            Unhealthy
        );
        assert_eq!(assess(&[], &[check(Unhealthy, true)]), Unhealthy);
        assert_eq!(
            assess(&[input(Open, true, false)], &[check(Healthy, false)]),
            Unhealthy
        );
    }

    #[test]
    fn http_codes() {
        assert_eq!(Healthy.http_status_code(), 200);
        assert_eq!(Degraded.http_status_code(), 200);
        assert_eq!(Unhealthy.http_status_code(), 503);
        assert!(Healthy < Degraded && Degraded < Unhealthy);
    }

    #[test]
    fn report_entries_follow_the_inputs() {
        let mut open = input(Open, true, false);
        open.status.service = "b".into();
        open.status.failure_rate = Some(0.75);
        open.since_transition = Some(Duration::from_millis(1500));
        let r = build_report(vec![input(Closed, false, false), open], Vec::new());
        assert_eq!(r.status, Unhealthy);
        assert!(!r.is_healthy());
        assert_eq!(r.http_status_code(), 503);
        assert!(!r.kill_switch);
        let b = &r.services[1];
        assert_eq!(
            (b.state, b.failure_rate, b.critical, b.status),
            (Open, Some(0.75), true, Unhealthy)
        );
        assert_eq!(b.since_transition, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn panic_messages() {
        assert_eq!(panic_message(&"static"), "static");
        assert_eq!(panic_message(&String::from("owned")), "owned");
        assert_eq!(panic_message(&7_u32), "a panic without a message");
    }

    #[test]
    fn nested_sets_are_recognised() {
        let inner = HealthChecks::named("inner").check_fn("x", true, || async { Ok(()) });
        let outer = HealthChecks::new()
            .check(inner)
            .check_fn("y", false, || async { Ok(()) });
        assert!(matches!(outer.children[0].node, Node::Group(_)));
        assert!(matches!(outer.children[1].node, Node::Leaf(_)));
        assert!(HealthCheck::critical(&outer));
        assert!(!HealthCheck::critical(&outer.clone().critical(false)));
        assert!(format!("{outer:?}").contains("inner"));
    }
}
