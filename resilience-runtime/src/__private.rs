//! What attribute expansions name. Not a public API: it changes with the macros.

pub use crate::breaker::CircuitState;
pub use crate::config::{Backoff, Jitter, Rate, Spec, Strategy};
pub use crate::fallback::{Fallback, SyncFallback};
pub use crate::registry::{generated_name, ServiceRef, Site, SiteName};
pub use crate::service::{Call, Hooks, Lend, LendAttempt, Service};
pub use crate::ResilienceError;
pub use core::ops::ControlFlow;
pub use core::time::Duration;

/// The error type of a function's `Result`, also behind an alias.
#[diagnostic::on_unimplemented(
    message = "a resilience attribute needs a function returning `Result<T, E>`; `{Self}` is not a `Result`",
    label = "not a `Result`",
    note = "the policies decide on errors: return `Result<T, E>` (or an alias of it)"
)]
pub trait ResultLike {
    /// `T`.
    type Ok;
    /// `E`.
    type Err;
}

impl<T, E> ResultLike for Result<T, E> {
    type Ok = T;
    type Err = E;
}

/// `E` can carry a rejection or a timeout.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot carry a circuit-breaker, bulkhead, rate-limit or timeout error",
    label = "the function's error type must implement `From<ResilienceError>`",
    note = "add `impl From<resilience_runtime::ResilienceError> for {Self}` (for example a variant `{Self}::Resilience(ResilienceError)`), or return `anyhow::Error` / `Box<dyn std::error::Error + Send + Sync>`"
)]
pub trait FromResilienceError: Sized {
    /// The conversion.
    fn from_resilience(e: ResilienceError) -> Self;
}

impl<E: From<ResilienceError>> FromResilienceError for E {
    #[inline]
    fn from_resilience(e: ResilienceError) -> Self {
        E::from(e)
    }
}

/// `Some(conversion)`, requiring `E: From<ResilienceError>` with a readable error.
#[inline]
pub const fn into_error<E: FromResilienceError>() -> Option<fn(ResilienceError) -> E> {
    Some(<E as FromResilienceError>::from_resilience)
}

/// An owned argument the body needs once per attempt, or the fallback needs again.
#[diagnostic::on_unimplemented(
    message = "this argument is used again by a retry or a fallback, but `{Self}` is not `Clone`",
    label = "owned argument of type `{Self}` must be `Clone`",
    note = "take it by reference (`&{Self}`), or derive/implement `Clone` for it"
)]
pub trait RetryClone: Sized {
    /// A fresh copy for the next attempt.
    fn clone_arg(&self) -> Self;
}

impl<T: Clone> RetryClone for T {
    #[inline]
    fn clone_arg(&self) -> Self {
        self.clone()
    }
}

/// A fresh copy of an owned argument.
/// Runs one attempt's body: the closure a sync expansion with a retry makes of the
/// function's body, inside the closure it gives `Call::retry_sync`. The bound gives
/// the body its expected `Result` type, so a type error points at the body.
#[inline(always)]
pub fn attempt_body<T, E>(body: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    body()
}

#[inline]
pub fn clone_arg<T: RetryClone>(t: &T) -> T {
    t.clone_arg()
}
