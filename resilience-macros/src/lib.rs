//! The attribute macros of `resilience`. Use them through `resilience-runtime`
//! (`use resilience_runtime::prelude::*;`), which re-exports them; this crate is an
//! implementation detail.
//!
//! Each attribute reads its keys (and those of the other resilience attributes
//! stacked on the same function, which it removes), checks every value at compile
//! time, and rewrites the function's body into calls of the runtime's hidden
//! `__private` module. Every bad value, unknown key, duplicate or conflict is a
//! compile error at the token at fault; the function is then left as written, so the
//! rest of the crate still compiles and IDEs keep working.
//!
//! The keys and their meaning are the runtime's documentation; `docs/EXPANSION.md`
//! describes the seam between macro and runtime.
//!
//! # What the attribute expands to
//!
//! ```text
//! #[with_resilience(service = "summarizer", timeout = "5s", retry(max_attempts = 3))]
//! #[fallback = Self::canned]
//! async fn summarize(&self, text: String) -> Result<String, AiError> { BODY }
//! ```
//!
//! becomes (paths shortened: `__private` is `::resilience_runtime::__private`, or
//! `<crate = "path">::__private`):
//!
//! ```text
//! async fn summarize(&self, text: String) -> Result<String, AiError> {
//!     static __RESILIENCE_SITE: __private::Site = __private::Site::new(
//!         __private::SiteName::Fixed("summarizer"),
//!         __private::Spec {
//!             breaker: true,
//!             retry: true,
//!             max_attempts: Some(3u32),
//!             timeout: Some(__private::Duration::from_nanos(5000000000u64)),
//!             ..__private::Spec::EMPTY
//!         },
//!     );
//!     let __resilience_hooks: &__private::Hooks<<Result<String, AiError> as __private::ResultLike>::Err> =
//!         &const { __private::Hooks { into_error: __private::into_error(), ..__private::Hooks::NONE } };
//!     let __resilience_svc: &'static __private::Service = __RESILIENCE_SITE.service();
//!     match {
//!         let __resilience_self = self;                       // `self` in BODY is renamed
//!         let text = __private::clone_arg(&text);             // one copy kept for the fallback
//!         // every attempt, the backoff and the timeouts in one future; the closure
//!         // makes each attempt's body
//!         __resilience_svc
//!             .retry::<<Result<String, AiError> as __private::ResultLike>::Ok, _, _, _>(
//!                 __resilience_hooks,
//!                 move || {
//!                     let text = __private::clone_arg(&text); // a fresh copy per attempt
//!                     async move { BODY }
//!                 },
//!             )
//!             .await
//!     } {
//!         Ok(v) => Ok(v),
//!         Err(e) => {
//!             __resilience_svc.fallback_used();
//!             // argument types written out, so a fallback of the wrong shape fails
//!             // the `Fallback` bound with its readable message, at `Self::canned`
//!             <_ as __private::Fallback<(&Self, String,), _, _, _>>::call_fallback(
//!                 Self::canned, (self, text,), e,
//!             )
//!             .await
//!         }
//!     }
//! }
//! ```
//!
//! - Without `service`, the name is generated from a nested marker function
//!   (`SiteName::Generated(__resilience_name)`, the runtime strips the marker from its
//!   type name); `service = <expr>` computes the name per call with
//!   `__RESILIENCE_SITE.keyed(AsRef::<str>::as_ref(&(expr)))`.
//! - An async function that lends an argument `&mut` to each attempt (`&mut self`
//!   included) runs its attempts as a loop of `call.attempt(async move { BODY })` on
//!   the call `__resilience_svc.lend(..)` starts: a closure called per attempt cannot
//!   return a body that borrows through it. Without a retry, an async function makes one
//!   attempt through `once` (or `once_lean` when no written policy needs a timer).
//! - A sync function runs its attempts as
//!   `call(..).retry_sync(|| { copies; __private::attempt_body(move || BODY) })` (its
//!   only attempt, without a retry, as `call(..).attempt_once_sync(move || BODY)`),
//!   and calls `SyncFallback::call_fallback`.
//! - `&T` arguments are copied into each attempt, `&mut T` ones reborrowed, owned ones
//!   cloned (only under a retry, or once for the fallback). Destructuring patterns
//!   are bound to `__resilience_argN` in the signature and destructured inside.
//! - A method that `#[async_trait]` already turned into
//!   `fn .. -> Pin<Box<dyn Future<Output = R> + ..>> { Box::pin(async move { .. }) }`
//!   is expanded inside its `async move` block.

mod expand;
mod model;
mod parse;
mod validate;

use proc_macro::TokenStream;

use parse::AttrKind;

/// Every policy in one attribute: a circuit breaker and a retry (the `strategy`
/// preset's, with the written keys on top), and timeout, total timeout, bulkhead,
/// rate limit and fallback when written.
///
/// ```ignore
/// #[with_resilience(service = "payments", timeout = "2s",
///                   retry(max_attempts = 3, delay = "100ms"),
///                   circuit_breaker(failure_rate = 0.5, window = 20))]
/// async fn charge(&self, order: &Order) -> Result<Receipt, PayError> { .. }
/// ```
#[proc_macro_attribute]
pub fn with_resilience(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(AttrKind::WithResilience, args.into(), item.into()).into()
}

/// A circuit breaker: `failure_threshold`, or `failure_rate`/`window`/`min_calls`,
/// `slow_call`/`slow_call_rate`, `cooldown`/`cooldown_max`, `half_open_calls`,
/// `success_threshold`, `record_if`, `ignore_if`.
///
/// ```ignore
/// #[circuit_breaker(failure_threshold = 5, cooldown = "30s")]
/// fn lookup(key: &str) -> Result<String, DbError> { .. }
/// ```
#[proc_macro_attribute]
pub fn circuit_breaker(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(AttrKind::CircuitBreaker, args.into(), item.into()).into()
}

/// A retry: `max_attempts`, `delay`, `backoff`, `multiplier`, `max_delay`, `jitter`,
/// `max_elapsed`, `retry_if`, `retry_after`.
///
/// ```ignore
/// #[with_retry(max_attempts = 5, delay = "50ms", jitter = "full")]
/// async fn fetch(url: &str) -> Result<Bytes, HttpError> { .. }
/// ```
#[proc_macro_attribute]
pub fn with_retry(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(AttrKind::WithRetry, args.into(), item.into()).into()
}

/// A limit on each attempt of an `async fn`: `#[timeout("5s")]`; also
/// `#[timeout("5s", total_timeout = "30s")]` for a limit on the whole call.
///
/// ```ignore
/// #[timeout("500ms")]
/// async fn ping(&self) -> Result<(), NetError> { .. }
/// ```
#[proc_macro_attribute]
pub fn timeout(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(AttrKind::Timeout, args.into(), item.into()).into()
}

/// At most `max_concurrent` calls inside at once per service; a call waits up to
/// `max_wait` for a slot.
///
/// ```ignore
/// #[bulkhead(max_concurrent = 4, max_wait = "100ms")]
/// async fn render(&self, page: Page) -> Result<Html, RenderError> { .. }
/// ```
#[proc_macro_attribute]
pub fn bulkhead(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(AttrKind::Bulkhead, args.into(), item.into()).into()
}

/// A rate limit per service: `rate = "100/s"`, `burst`, `max_wait`.
///
/// ```ignore
/// #[rate_limit(rate = "10/s", burst = 20)]
/// async fn notify(user: UserId) -> Result<(), PushError> { .. }
/// ```
#[proc_macro_attribute]
pub fn rate_limit(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(AttrKind::RateLimit, args.into(), item.into()).into()
}

/// The function called with the same arguments (and optionally the final error)
/// when the call ends in an error: `#[fallback(Self::cached)]`, or
/// `#[fallback = Self::cached]` below another resilience attribute.
///
/// ```ignore
/// #[fallback(Self::cached)]
/// async fn price(&self, sku: &str) -> Result<Price, ShopError> { .. }
/// ```
#[proc_macro_attribute]
pub fn fallback(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(AttrKind::Fallback, args.into(), item.into()).into()
}

#[cfg(test)]
mod tests;
