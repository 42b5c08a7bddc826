//! Policies for code that cannot take an attribute: a closure, a dynamically chosen
//! call. The builder writes the same [`Spec`] an attribute does and the calls go
//! through the same [`Service`], so behaviour is identical.

use std::future::Future;
use std::time::Duration;

use crate::config::{Backoff, Jitter, Rate, Spec, Strategy};
use crate::error::ConfigError;
use crate::registry::registry;
use crate::retry::thread_random;
use crate::service::{CallFuture, DefaultHooks, Hooks, Registration, Service};
use crate::ResilienceError;

/// Entry point of the builder.
///
/// ```
/// use resilience_runtime::{Resilience, ResilienceError};
/// # #[derive(Debug)] struct MyError; impl From<ResilienceError> for MyError { fn from(_: ResilienceError) -> Self { MyError } }
/// # async fn fetch() -> Result<u32, MyError> { Ok(7) }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let policy = Resilience::builder("inventory")
///     .failure_rate(0.5)
///     .window_calls(20)
///     .cooldown(std::time::Duration::from_secs(30))
///     .max_attempts(3)
///     .timeout(std::time::Duration::from_secs(2))
///     .build()?;
/// let n: Result<u32, MyError> = policy.call(|| async { fetch().await }).await;
/// assert_eq!(n.unwrap(), 7);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Resilience;

impl Resilience {
    /// A builder for the service `name`, with a circuit breaker and a retry from the
    /// `balanced` preset, like `#[with_resilience]`.
    pub fn builder(name: impl Into<String>) -> ResilienceBuilder {
        ResilienceBuilder {
            name: name.into(),
            spec: Spec {
                breaker: true,
                retry: true,
                ..Spec::EMPTY
            },
            random: thread_random,
        }
    }
}

/// Collects a policy's settings; [`ResilienceBuilder::build`] checks them all.
#[derive(Debug, Clone)]
#[must_use]
pub struct ResilienceBuilder {
    name: String,
    spec: Spec,
    random: fn() -> u64,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty => $($flag:ident)?;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, v: $ty) -> Self {
                self.spec.$name = Some(v);
                $(self.spec.$flag = true;)?
                self
            }
        )*
    };
}

impl ResilienceBuilder {
    setters! {
        /// The preset the other keys are laid over.
        strategy: Strategy => ;
        /// Consecutive mode: open on the N-th consecutive failure.
        failure_threshold: u32 => breaker;
        /// Rate mode: open when failures / recorded >= this.
        failure_rate: f64 => breaker;
        /// Rate mode over the last N calls.
        window_calls: u32 => breaker;
        /// Rate mode over the last period.
        window_time: Duration => breaker;
        /// No decision before this many outcomes are in the window.
        min_calls: u32 => breaker;
        /// A success slower than this is slow.
        slow_call: Duration => breaker;
        /// Open when slow / recorded >= this.
        slow_call_rate: f64 => breaker;
        /// Time spent open before probing.
        cooldown: Duration => breaker;
        /// The cooldown doubles after each failed probe, up to this.
        cooldown_max: Duration => breaker;
        /// Probes admitted at once in half-open.
        half_open_calls: u32 => breaker;
        /// Successful probes needed to close.
        success_threshold: u32 => breaker;
        /// Attempts in all, the first included (1 = no retry).
        max_attempts: u32 => retry;
        /// The first retry delay.
        delay: Duration => retry;
        /// How delays grow.
        backoff: Backoff => retry;
        /// Growth factor of exponential backoff.
        multiplier: f64 => retry;
        /// Cap on one delay.
        max_delay: Duration => retry;
        /// Randomisation of each delay.
        jitter: Jitter => retry;
        /// No attempt starts later than this after the first began.
        max_elapsed: Duration => retry;
        /// A limit on each attempt (async calls only).
        timeout: Duration => ;
        /// A limit on the whole call, retries included (async calls only).
        total_timeout: Duration => ;
        /// At most this many calls inside at once.
        max_concurrent: u32 => bulkhead;
        /// How long a call may wait for a bulkhead slot.
        bulkhead_max_wait: Duration => bulkhead;
        /// Permits per period.
        rate: Rate => rate_limit;
        /// Permits available at once.
        burst: u32 => rate_limit;
        /// How long a call may wait for a permit.
        rate_max_wait: Duration => rate_limit;
    }

    /// No circuit breaker.
    pub fn no_circuit_breaker(mut self) -> Self {
        self.spec.breaker = false;
        self
    }

    /// No retry (one attempt).
    pub fn no_retry(mut self) -> Self {
        self.spec.retry = false;
        self
    }

    /// A bulkhead with the default size when no `max_concurrent` is given.
    pub fn bulkhead(mut self) -> Self {
        self.spec.bulkhead = true;
        self
    }

    /// A rate limit with the default rate when no `rate` is given.
    pub fn rate_limit(mut self) -> Self {
        self.spec.rate_limit = true;
        self
    }

    /// The random source for retry jitter (uniform `u64`s), for exact tests.
    pub fn random_source(mut self, f: fn() -> u64) -> Self {
        self.random = f;
        self
    }

    /// The settings as written.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Checks every setting and registers the service (the first registration of a
    /// name wins). Nothing is registered when a setting is invalid.
    pub fn build(self) -> Result<Policy, ConfigError> {
        let config = self.spec.resolve()?;
        let service = registry().get_or_register(
            &self.name,
            Registration::Copied(&self.spec, &config),
            self.random,
            true,
            None,
        );
        Ok(Policy { service })
    }
}

/// A built policy: call through it as often as you like.
#[derive(Debug, Clone)]
pub struct Policy {
    service: crate::ServiceRef,
}

impl Policy {
    /// The service behind it (status, reset).
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// Runs `f` (once per attempt) under the policies. Errors convert from
    /// [`ResilienceError`] for rejections and timeouts.
    pub fn call<T, E, F, Fut>(&self, f: F) -> CallFuture<'_, T, E, F, Fut, DefaultHooks<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<ResilienceError>,
    {
        // The default hooks are known from the type: the future keeps no word
        // for them.
        CallFuture::new(&self.service, DefaultHooks::NEW, f)
    }

    /// [`Policy::call`] with custom error classification.
    pub fn call_with<'a, T, E, F, Fut>(
        &'a self,
        hooks: &'a Hooks<E>,
        f: F,
    ) -> CallFuture<'a, T, E, F, Fut>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        // What an attribute with a retry runs.
        self.service.retry(hooks, f)
    }

    /// Runs a sync `f` under the policies (timeouts do not apply to sync calls).
    ///
    /// Inlined into the caller, as the swift lane it enters is: the lane is a few
    /// dozen instructions with its ways off it outlined, and a call of its own
    /// around it would cost a frame of six saved registers per call.
    #[inline(always)]
    pub fn call_sync<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnMut() -> Result<T, E>,
        E: From<ResilienceError>,
    {
        self.call_sync_with(&Hooks::DEFAULT, f)
    }

    /// [`Policy::call_sync`] with custom error classification.
    #[inline(always)]
    pub fn call_sync_with<T, E, F>(&self, hooks: &Hooks<E>, f: F) -> Result<T, E>
    where
        F: FnMut() -> Result<T, E>,
    {
        self.service.call(hooks).run_sync(f)
    }

    /// Runs `fallback` with the final error when the call fails, counting it.
    pub async fn call_or<T, E, F, Fut, G, GFut>(&self, f: F, fallback: G) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<ResilienceError>,
        G: FnOnce(E) -> GFut,
        GFut: Future<Output = Result<T, E>>,
    {
        match self.call(f).await {
            Ok(v) => Ok(v),
            Err(e) => {
                self.service.fallback_used();
                fallback(e).await
            }
        }
    }
}
