//! One policy from all the stacked attributes of a function: every key with the
//! spans it was written at, and where each policy was given.

use proc_macro2::Span;

use crate::parse::{
    BreakerKeys, BulkheadKeys, CratePath, Dur, FnPath, Parsed, RateLimitKeys, RetryKeys,
    ServiceValue, Spanned, StrategyValue,
};

/// Where a policy was given: the token to point at and how to name it in a message.
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    pub span: Span,
    pub written: String,
    /// `false` for the breaker and retry `#[with_resilience]` brings without a group.
    pub explicit: bool,
}

/// A policy that has keys: present or not, where, and its keys.
#[derive(Clone, Debug, Default)]
pub(crate) struct Section<K> {
    pub origin: Option<Origin>,
    pub keys: K,
}

impl<K> Section<K> {
    pub(crate) fn present(&self) -> bool {
        self.origin.is_some()
    }
}

/// Everything the stacked attributes of one function say.
#[derive(Clone, Debug, Default)]
pub(crate) struct Model {
    pub krate: Option<Spanned<CratePath>>,
    pub service: Option<Spanned<ServiceValue>>,
    pub strategy: Option<Spanned<StrategyValue>>,
    pub breaker: Section<BreakerKeys>,
    pub retry: Section<RetryKeys>,
    pub timeout: Option<Spanned<Dur>>,
    pub total_timeout: Option<Spanned<Dur>>,
    pub bulkhead: Section<BulkheadKeys>,
    pub rate_limit: Section<RateLimitKeys>,
    pub fallback: Option<Spanned<FnPath>>,
    with_resilience: Option<Span>,
}

impl Model {
    /// Adds one attribute; a policy or a once-only key given twice is an error at the
    /// second place (attributes come in written order).
    pub(crate) fn add(&mut self, attr_span: Span, parsed: Parsed, errors: &mut Vec<syn::Error>) {
        match parsed {
            Parsed::WithResilience(a) => {
                if self.with_resilience.is_some() {
                    errors.push(syn::Error::new(
                        attr_span,
                        "`#[with_resilience]` is given twice on this function: merge the keys into one attribute",
                    ));
                    return;
                }
                self.with_resilience = Some(attr_span);
                let a = *a;
                let (bspan, bkeys, bexplicit) = match a.circuit_breaker {
                    Some(g) => (g.key, g.keys, true),
                    None => (attr_span, BreakerKeys::default(), false),
                };
                set_section(
                    &mut self.breaker,
                    origin(
                        bspan,
                        "`circuit_breaker(..)` in `#[with_resilience]`",
                        bexplicit,
                    ),
                    bkeys,
                    "circuit breaker",
                    errors,
                );
                let (rspan, rkeys, rexplicit) = match a.retry {
                    Some(g) => (g.key, g.keys, true),
                    None => (attr_span, RetryKeys::default(), false),
                };
                set_section(
                    &mut self.retry,
                    origin(rspan, "`retry(..)` in `#[with_resilience]`", rexplicit),
                    rkeys,
                    "retry",
                    errors,
                );
                if let Some(g) = a.bulkhead {
                    set_section(
                        &mut self.bulkhead,
                        origin(g.key, "`bulkhead(..)` in `#[with_resilience]`", true),
                        g.keys,
                        "bulkhead",
                        errors,
                    );
                }
                if let Some(g) = a.rate_limit {
                    set_section(
                        &mut self.rate_limit,
                        origin(g.key, "`rate_limit(..)` in `#[with_resilience]`", true),
                        g.keys,
                        "rate limit",
                        errors,
                    );
                }
                once(&mut self.timeout, a.timeout, "timeout", errors);
                once(
                    &mut self.total_timeout,
                    a.total_timeout,
                    "total_timeout",
                    errors,
                );
                once_fallback(&mut self.fallback, a.fallback, errors);
                once(&mut self.strategy, a.strategy, "strategy", errors);
                once(&mut self.service, a.service, "service", errors);
                once(&mut self.krate, a.krate, "crate", errors);
            }
            Parsed::CircuitBreaker(a) => {
                let a = *a;
                set_section(
                    &mut self.breaker,
                    origin(attr_span, "`#[circuit_breaker]`", true),
                    a.keys,
                    "circuit breaker",
                    errors,
                );
                once(&mut self.strategy, a.strategy, "strategy", errors);
                once(&mut self.service, a.service, "service", errors);
                once(&mut self.krate, a.krate, "crate", errors);
            }
            Parsed::WithRetry(a) => {
                let a = *a;
                set_section(
                    &mut self.retry,
                    origin(attr_span, "`#[with_retry]`", true),
                    a.keys,
                    "retry",
                    errors,
                );
                once(&mut self.strategy, a.strategy, "strategy", errors);
                once(&mut self.service, a.service, "service", errors);
                once(&mut self.krate, a.krate, "crate", errors);
            }
            Parsed::Timeout(t, a) => {
                once(&mut self.timeout, t, "timeout", errors);
                once(
                    &mut self.total_timeout,
                    a.total_timeout,
                    "total_timeout",
                    errors,
                );
                once(&mut self.service, a.service, "service", errors);
                once(&mut self.krate, a.krate, "crate", errors);
            }
            Parsed::Bulkhead(a) => {
                set_section(
                    &mut self.bulkhead,
                    origin(attr_span, "`#[bulkhead]`", true),
                    a.keys,
                    "bulkhead",
                    errors,
                );
                once(&mut self.service, a.service, "service", errors);
                once(&mut self.krate, a.krate, "crate", errors);
            }
            Parsed::RateLimit(a) => {
                set_section(
                    &mut self.rate_limit,
                    origin(attr_span, "`#[rate_limit]`", true),
                    a.keys,
                    "rate limit",
                    errors,
                );
                once(&mut self.service, a.service, "service", errors);
                once(&mut self.krate, a.krate, "crate", errors);
            }
            Parsed::Fallback(p, a) => {
                once_fallback(&mut self.fallback, p, errors);
                once(&mut self.service, a.service, "service", errors);
                once(&mut self.krate, a.krate, "crate", errors);
            }
        }
    }

    /// A policy that can reject or time out is present, so `E: From<ResilienceError>`.
    pub(crate) fn can_reject(&self) -> bool {
        self.breaker.present()
            || self.timeout.is_some()
            || self.total_timeout.is_some()
            || self.bulkhead.present()
            || self.rate_limit.present()
    }

    /// The body may run more than once: a retry that is not `max_attempts = 1`.
    /// No declared policy needs a timer or a clock: no timeout, no total timeout, no
    /// rate limit, no bulkhead wait, no slow-call threshold (the strategy presets set
    /// none of these).
    pub(crate) fn needs_no_timer(&self) -> bool {
        self.timeout.is_none()
            && self.total_timeout.is_none()
            && !self.rate_limit.present()
            && self.breaker.keys.slow_call.is_none()
            && self
                .bulkhead
                .keys
                .max_wait
                .as_ref()
                .is_none_or(|w| w.value.0 == 0)
    }

    pub(crate) fn retries(&self) -> bool {
        self.retry.present()
            && self
                .retry
                .keys
                .max_attempts
                .as_ref()
                .is_none_or(|m| m.value.0 > 1)
    }
}

fn origin(span: Span, written: &str, explicit: bool) -> Origin {
    Origin {
        span,
        written: written.to_owned(),
        explicit,
    }
}

fn set_section<K>(
    section: &mut Section<K>,
    new: Origin,
    keys: K,
    what: &str,
    errors: &mut Vec<syn::Error>,
) {
    match &section.origin {
        Some(first) if first.explicit && new.explicit => errors.push(syn::Error::new(
            new.span,
            format!(
                "the {what} is given twice: {} already sets it; keep one and put all its keys there",
                first.written
            ),
        )),
        Some(first) if first.explicit => {}
        _ => {
            section.origin = Some(new);
            section.keys = keys;
        }
    }
}

fn once<T>(
    slot: &mut Option<Spanned<T>>,
    new: Option<Spanned<T>>,
    key: &str,
    errors: &mut Vec<syn::Error>,
) {
    let Some(new) = new else { return };
    if slot.is_some() {
        let fix = match key {
            "service" => "name the service once, on one of the stacked attributes",
            "crate" => "give the runtime's path once, on one of the stacked attributes",
            "strategy" => "choose one strategy, on one of the stacked attributes",
            _ => "keep one",
        };
        errors.push(syn::Error::new(
            new.key,
            format!("`{key}` is given twice: {fix}"),
        ));
    } else {
        *slot = Some(new);
    }
}

fn once_fallback(
    slot: &mut Option<Spanned<FnPath>>,
    new: Option<Spanned<FnPath>>,
    errors: &mut Vec<syn::Error>,
) {
    let Some(new) = new else { return };
    if slot.is_some() {
        errors.push(syn::Error::new(
            new.key,
            "the fallback is given twice: a function has one fallback; keep one",
        ));
    } else {
        *slot = Some(new);
    }
}
