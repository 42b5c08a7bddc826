//! The errors the policies produce, and configuration errors.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A service's name inside a [`ResilienceError`]: shared with the service, so a
/// rejection costs no allocation (and, for services that live as long as the
/// process, no reference count either). Reads like a `&str` (`Deref`, `Display`, and
/// comparisons with `str`, `&str` and `String`).
#[derive(Clone)]
pub struct ServiceName(Repr);

#[derive(Clone)]
enum Repr {
    /// A service that is never removed: its name lives as long as the process.
    Static(&'static str),
    Shared(Arc<str>),
}

impl ServiceName {
    /// The name.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }

    /// The name of a service that is never removed (fixed names, builders): kept
    /// for the life of the process, so copies of it count no references.
    pub(crate) fn permanent(s: &str) -> Self {
        Self(Repr::Static(Box::leak(s.into())))
    }
}

impl PartialEq for ServiceName {
    fn eq(&self, o: &Self) -> bool {
        self.as_str() == o.as_str()
    }
}
impl Eq for ServiceName {}
impl PartialOrd for ServiceName {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for ServiceName {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(o.as_str())
    }
}
impl std::hash::Hash for ServiceName {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
    }
}

impl From<&str> for ServiceName {
    fn from(s: &str) -> Self {
        Self(Repr::Shared(s.into()))
    }
}
impl From<String> for ServiceName {
    fn from(s: String) -> Self {
        Self(Repr::Shared(s.into()))
    }
}
impl From<ServiceName> for String {
    fn from(s: ServiceName) -> Self {
        s.as_str().to_owned()
    }
}
impl std::ops::Deref for ServiceName {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}
impl AsRef<str> for ServiceName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}
impl std::borrow::Borrow<str> for ServiceName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}
impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl fmt::Debug for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
impl PartialEq<str> for ServiceName {
    fn eq(&self, o: &str) -> bool {
        self.as_str() == o
    }
}
impl PartialEq<&str> for ServiceName {
    fn eq(&self, o: &&str) -> bool {
        self.as_str() == *o
    }
}
impl PartialEq<String> for ServiceName {
    fn eq(&self, o: &String) -> bool {
        self.as_str() == o.as_str()
    }
}
impl PartialEq<ServiceName> for str {
    fn eq(&self, o: &ServiceName) -> bool {
        self == o.as_str()
    }
}
impl PartialEq<ServiceName> for &str {
    fn eq(&self, o: &ServiceName) -> bool {
        *self == o.as_str()
    }
}
impl PartialEq<ServiceName> for String {
    fn eq(&self, o: &ServiceName) -> bool {
        self.as_str() == o.as_str()
    }
}
impl serde::Serialize for ServiceName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A call refused or cut short by a policy.
///
/// Each variant names the service, so a log line or an HTTP error body says which
/// dependency is unwell. Match with `{ .. }`: variants may gain fields.
///
/// ```
/// use resilience_runtime::ResilienceError;
/// fn advice(e: &ResilienceError) -> Option<std::time::Duration> {
///     match e {
///         ResilienceError::CircuitOpen { retry_after, .. } => Some(*retry_after),
///         ResilienceError::RateLimited { retry_after, .. } => Some(*retry_after),
///         _ => None,
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResilienceError {
    /// The circuit breaker is open (or half-open with every probe slot taken).
    #[non_exhaustive]
    CircuitOpen {
        /// The service whose breaker refused the call.
        service: ServiceName,
        /// Time left before the breaker lets a probe through.
        retry_after: Duration,
    },
    /// An attempt (or, with `total_timeout`, the whole call) took too long.
    #[non_exhaustive]
    Timeout {
        /// The service that timed out.
        service: ServiceName,
        /// The limit that was exceeded.
        after: Duration,
    },
    /// Every bulkhead slot was taken for longer than `max_wait`.
    #[non_exhaustive]
    BulkheadFull {
        /// The service whose bulkhead is full.
        service: ServiceName,
    },
    /// The rate limiter would have granted a permit later than `max_wait`.
    #[non_exhaustive]
    RateLimited {
        /// The service whose limit was reached.
        service: ServiceName,
        /// How long the call would have had to wait for a permit.
        retry_after: Duration,
    },
}

impl ResilienceError {
    /// The service the error is about.
    pub fn service(&self) -> &str {
        match self {
            Self::CircuitOpen { service, .. }
            | Self::Timeout { service, .. }
            | Self::BulkheadFull { service }
            | Self::RateLimited { service, .. } => service,
        }
    }

    /// True for refusals that happened before the body ran (breaker, bulkhead, rate
    /// limit); such errors are never retried.
    pub fn is_rejection(&self) -> bool {
        !matches!(self, Self::Timeout { .. })
    }

    /// The wait a caller should honour before trying again, when the policy knows it.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::CircuitOpen { retry_after, .. } | Self::RateLimited { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    pub(crate) fn circuit_open(service: &ServiceName, retry_after: Duration) -> Self {
        Self::CircuitOpen {
            service: service.clone(),
            retry_after,
        }
    }
    pub(crate) fn timeout(service: &ServiceName, after: Duration) -> Self {
        Self::Timeout {
            service: service.clone(),
            after,
        }
    }
    pub(crate) fn bulkhead_full(service: &ServiceName) -> Self {
        Self::BulkheadFull {
            service: service.clone(),
        }
    }
    pub(crate) fn rate_limited(service: &ServiceName, retry_after: Duration) -> Self {
        Self::RateLimited {
            service: service.clone(),
            retry_after,
        }
    }
}

impl fmt::Display for ResilienceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CircuitOpen {
                service,
                retry_after,
            } => write!(
                f,
                "circuit breaker for `{service}` is open: calls are refused for {}; \
                 retry after that or check the service's health",
                crate::config::format_duration(*retry_after)
            ),
            Self::Timeout { service, after } => write!(
                f,
                "call to `{service}` timed out after {}; raise the timeout if the service is \
                 slow but healthy",
                crate::config::format_duration(*after)
            ),
            Self::BulkheadFull { service } => write!(
                f,
                "bulkhead for `{service}` is full: too many calls in flight; retry later or \
                 raise `max_concurrent`/`max_wait`"
            ),
            Self::RateLimited {
                service,
                retry_after,
            } => write!(
                f,
                "rate limit for `{service}` reached: the next permit is free in {}",
                crate::config::format_duration(*retry_after)
            ),
        }
    }
}

impl std::error::Error for ResilienceError {}

/// One problem found in a configuration: where it is and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Where the problem is, e.g. `circuit_breaker.failure_rate`.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a configuration, reported at once. Nothing was changed.
///
/// ```
/// use resilience_runtime::Resilience;
/// let err = Resilience::builder("payments").failure_rate(1.7).build().unwrap_err();
/// assert!(err.to_string().contains("circuit_breaker.failure_rate: 1.7 is not in (0, 1]"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    problems: Vec<ConfigProblem>,
}

impl ConfigError {
    pub(crate) fn new(problems: Vec<ConfigProblem>) -> Self {
        Self { problems }
    }
    /// The problems, in the order they were found.
    pub fn problems(&self) -> &[ConfigProblem] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid resilience configuration: {one}"),
            many => {
                write!(
                    f,
                    "invalid resilience configuration ({} problems):",
                    many.len()
                )?;
                for p in many {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}
