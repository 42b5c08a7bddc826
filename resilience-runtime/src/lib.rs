//! Fault tolerance for code that calls things that fail: circuit breakers, retries
//! with backoff and jitter, timeouts, bulkheads, rate limits and fallbacks, per
//! service, configured by an attribute or a builder.
//!
//! ```
//! use resilience_runtime::prelude::*;
//!
//! #[derive(Debug)]
//! enum AiError { Busy, Resilience(ResilienceError) }
//! impl From<ResilienceError> for AiError {
//!     fn from(e: ResilienceError) -> Self { AiError::Resilience(e) }
//! }
//!
//! struct Summarizer;
//! impl Summarizer {
//!     #[with_resilience(service = "summarizer", timeout = "5s",
//!                       retry(max_attempts = 3, delay = "200ms", jitter = "full"),
//!                       circuit_breaker(failure_rate = 0.5, window = 20, cooldown = "30s"))]
//!     #[fallback = Self::canned]
//!     async fn summarize(&self, text: &str) -> Result<String, AiError> {
//!         Ok(text.chars().take(10).collect())
//!     }
//!     fn canned(&self, _text: &str) -> Result<String, AiError> {
//!         Ok("summary unavailable".into())
//!     }
//! }
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let s = Summarizer.summarize("a long text to summarize").await.unwrap();
//! assert_eq!(s, "a long tex");
//! assert_eq!(status("summarizer").unwrap().successes, 1);
//! # }
//! ```
//!
//! Composition, outermost first, whatever the written order:
//! `fallback -> total_timeout -> retry -> circuit_breaker -> rate_limit -> bulkhead -> timeout -> body`.
//!
//! The contract is the project's `API.md`; `docs/EXPANSION.md` shows what an
//! attribute expands to.

#![warn(missing_docs)]

mod asym;
mod breaker;
mod builder;
mod bulkhead;
mod clock;
mod cold;
mod config;
mod counters;
mod document;
mod error;
pub mod events;
mod fallback;
#[cfg(feature = "redis")]
pub mod fleet;
mod health;
mod hold;
mod keymap;
mod live;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "sqlite")]
pub mod persist;
mod pool;
mod rate_limit;
mod registry;
mod retry;
mod returns;
mod run;
mod service;
mod status;
mod sync;

#[cfg(all(test, resilience_loom))]
mod loom_tests;

#[doc(hidden)]
pub mod __private;

pub use breaker::CircuitState;
pub use breaker::{BreakerSnapshot, BucketSnapshot, WindowSnapshot};
pub use builder::{Policy, Resilience, ResilienceBuilder};
pub use clock::{clock_source, set_clock_source, ClockError, ClockSource};
pub use config::{
    format_duration, parse_duration, Backoff, BreakerConfig, BreakerMode, BulkheadConfig, Jitter,
    PolicyConfig, Rate, RateLimitConfig, RetryConfig, Spec, Strategy, Window,
    DEFAULT_MAX_CONCURRENT, DEFAULT_RATE, MAX_WINDOW_CALLS,
};
pub use counters::CounterSnapshot;
pub use document::{
    BreakerSettings, BulkheadSettings, ConfigDocument, Format, PersistenceSettings,
    RateLimitSettings, RetrySettings, ServiceSettings,
};
pub use error::{ConfigError, ConfigProblem, ResilienceError, ServiceName};
pub use health::{
    health, health_with, BoxFuture, CheckReport, HealthCheck, HealthChecks, HealthReport,
    HealthStatus, ServiceHealth, DEFAULT_CHECK_TIMEOUT,
};
pub use live::{
    apply_config, apply_config_file, apply_config_str, clear_config, current_config,
    env_config_error, kill_switch, set_kill_switch, watch_config_file, ConfigChanges,
    ServiceChange,
};
pub use registry::{
    key_count, restore_all, set_key_capacity, snapshot_all, ServiceRef, DEFAULT_KEY_CAPACITY,
};
pub use retry::{backoff_delay, retry_delay, thread_random};
pub use service::{
    Bodies, Call, CallFuture, CallHooks, DefaultHooks, Hooks, LeanFuture, OneAttempt, Service,
    ServiceSnapshot,
};
pub use status::{breaker, reset_all, status, statuses, BreakerHandle, ServiceStatus};

pub use resilience_macros::{
    bulkhead, circuit_breaker, fallback, rate_limit, timeout, with_resilience, with_retry,
};

/// Everything an annotated crate needs: the attributes, the error, the state and
/// the status functions.
pub mod prelude {
    pub use crate::{
        breaker, reset_all, status, statuses, BreakerHandle, CircuitState, ResilienceError,
        ServiceStatus,
    };
    pub use resilience_macros::{
        bulkhead, circuit_breaker, fallback, rate_limit, timeout, with_resilience, with_retry,
    };
}
