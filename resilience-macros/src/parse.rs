//! Reading attribute arguments: the value types (durations, ratios, counts, rates,
//! enum strings, paths, service names), each checked on its own and carrying the
//! spans of its key and value, and the darling structs of every attribute and group.
//!
//! Checks that involve more than one key live in `validate`.

use darling::ast::NestedMeta;
use darling::util::path_to_string;
use darling::{Error, FromMeta};
use proc_macro2::{Span, TokenStream};
use syn::spanned::Spanned as _;
use syn::{Expr, ExprPath, Lit, Meta, UnOp};

/// The attributes of the crate, by the last segment of their path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttrKind {
    WithResilience,
    CircuitBreaker,
    WithRetry,
    Timeout,
    Bulkhead,
    RateLimit,
    Fallback,
}

impl AttrKind {
    pub(crate) const ALL: [AttrKind; 7] = [
        AttrKind::WithResilience,
        AttrKind::CircuitBreaker,
        AttrKind::WithRetry,
        AttrKind::Timeout,
        AttrKind::Bulkhead,
        AttrKind::RateLimit,
        AttrKind::Fallback,
    ];

    pub(crate) const fn name(self) -> &'static str {
        match self {
            AttrKind::WithResilience => "with_resilience",
            AttrKind::CircuitBreaker => "circuit_breaker",
            AttrKind::WithRetry => "with_retry",
            AttrKind::Timeout => "timeout",
            AttrKind::Bulkhead => "bulkhead",
            AttrKind::RateLimit => "rate_limit",
            AttrKind::Fallback => "fallback",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<AttrKind> {
        AttrKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A parsed value with the span of its key and of the value itself.
#[derive(Clone, Debug)]
pub(crate) struct Spanned<T> {
    pub value: T,
    pub key: Span,
    pub span: Span,
}

/// A value of one key, parsed from the expression after `=`.
pub(crate) trait Value: Sized {
    /// What a correct value looks like, for "needs a value" messages.
    const EXAMPLE: &'static str;
    fn parse(key: &str, expr: &Expr) -> Result<Self, Error>;
}

impl<T: Value> FromMeta for Spanned<T> {
    fn from_meta(meta: &Meta) -> darling::Result<Self> {
        let key = path_to_string(meta.path());
        let key_span = meta.path().span();
        match meta {
            Meta::NameValue(nv) => T::parse(&key, &nv.value)
                .map(|value| Spanned {
                    value,
                    key: key_span,
                    span: nv.value.span(),
                })
                .map_err(|e| e.with_span(&nv.value)),
            Meta::Path(p) => Err(Error::custom(format!(
                "`{key}` needs a value: write `{key} = {}`",
                T::EXAMPLE
            ))
            .with_span(p)),
            Meta::List(l) => Err(Error::custom(format!(
                "`{key}` takes one value: write `{key} = {}`",
                T::EXAMPLE
            ))
            .with_span(&l.path)),
        }
    }
}

/// A group of keys, `circuit_breaker(..)` inside `#[with_resilience]`; a bare
/// `bulkhead` takes every default.
#[derive(Clone, Debug)]
pub(crate) struct Group<T> {
    pub keys: T,
    pub key: Span,
}

impl<T: FromMeta + Default> FromMeta for Group<T> {
    fn from_meta(meta: &Meta) -> darling::Result<Self> {
        let key = meta.path().span();
        match meta {
            Meta::Path(_) => Ok(Group {
                keys: T::default(),
                key,
            }),
            Meta::List(l) => {
                let items = NestedMeta::parse_meta_list(l.tokens.clone())?;
                T::from_list(&items).map(|keys| Group { keys, key })
            }
            Meta::NameValue(nv) => {
                let name = path_to_string(&nv.path);
                Err(Error::custom(format!(
                    "`{name}` is a group of keys: write `{name}(..)`, e.g. `{}`",
                    group_example(&name)
                ))
                .with_span(&nv.path))
            }
        }
    }
}

fn group_example(name: &str) -> &'static str {
    match name {
        "circuit_breaker" => "circuit_breaker(failure_rate = 0.5)",
        "retry" => "retry(max_attempts = 3)",
        "bulkhead" => "bulkhead(max_concurrent = 10)",
        _ => "rate_limit(rate = \"100/s\")",
    }
}

/// Looks through the invisible groups a `macro_rules!` may wrap values in.
fn peel(expr: &Expr) -> &Expr {
    match expr {
        Expr::Group(g) => peel(&g.expr),
        Expr::Paren(p) => peel(&p.expr),
        other => other,
    }
}

fn lit(expr: &Expr) -> Option<&Lit> {
    match peel(expr) {
        Expr::Lit(l) => Some(&l.lit),
        _ => None,
    }
}

/// A literal written with a leading minus: `-1`, `-0.5`.
fn negative(expr: &Expr) -> Option<String> {
    match peel(expr) {
        Expr::Unary(u) if matches!(u.op, UnOp::Neg(_)) => match lit(&u.expr) {
            Some(Lit::Int(i)) => Some(format!("-{}", i.base10_digits())),
            Some(Lit::Float(f)) => Some(format!("-{}", f.base10_digits())),
            _ => None,
        },
        _ => None,
    }
}

fn kind_of(expr: &Expr) -> &'static str {
    match lit(expr) {
        Some(Lit::Str(_)) => "a string",
        Some(Lit::Int(_)) => "an integer",
        Some(Lit::Float(_)) => "a number",
        Some(Lit::Bool(_)) => "a boolean",
        Some(Lit::Char(_)) => "a character",
        Some(_) => "a literal",
        None => match peel(expr) {
            Expr::Path(_) => "a path",
            Expr::Closure(_) => "a closure",
            _ => "an expression",
        },
    }
}

fn err(expr: &Expr, msg: String) -> Error {
    Error::custom(msg).with_span(expr)
}

/// A count: a whole number >= 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Count(pub u32);

impl Value for Count {
    const EXAMPLE: &'static str = "3";
    fn parse(key: &str, expr: &Expr) -> Result<Self, Error> {
        if let Some(n) = negative(expr) {
            return Err(err(
                expr,
                format!("`{key}` must be at least 1, found `{n}`"),
            ));
        }
        match lit(expr) {
            Some(Lit::Int(i)) if i.base10_digits().starts_with('-') => Err(err(
                expr,
                format!("`{key}` must be at least 1, found `{}`", i.base10_digits()),
            )),
            Some(Lit::Int(i)) => match i.base10_parse::<u64>() {
                Ok(0) => Err(err(expr, format!("`{key}` must be at least 1, found `0`"))),
                Ok(n) => u32::try_from(n)
                    .map(Count)
                    .map_err(|_| err(expr, format!("`{key}` is too large: at most {}", u32::MAX))),
                Err(_) => Err(err(
                    expr,
                    format!("`{key}` takes a whole number, e.g. `{key} = 3`"),
                )),
            },
            Some(Lit::Str(s)) => {
                let shown = s
                    .value()
                    .trim()
                    .parse::<u32>()
                    .map_or("3".to_owned(), |n| n.to_string());
                Err(err(
                    expr,
                    format!("`{key}` takes a number, not a string: write `{key} = {shown}`"),
                ))
            }
            _ => Err(err(
                expr,
                format!(
                    "`{key}` takes a whole number >= 1, e.g. `{key} = 3`; found {}",
                    kind_of(expr)
                ),
            )),
        }
    }
}

fn number(key: &str, expr: &Expr, example: &str) -> Result<f64, Error> {
    if let Some(n) = negative(expr) {
        return n.parse::<f64>().map_err(|_| {
            err(
                expr,
                format!("`{key}` takes a number, e.g. `{key} = {example}`"),
            )
        });
    }
    match lit(expr) {
        Some(Lit::Float(f)) => f
            .base10_parse::<f64>()
            .map_err(|e| err(expr, e.to_string())),
        Some(Lit::Int(i)) => i
            .base10_parse::<f64>()
            .map_err(|e| err(expr, e.to_string())),
        Some(Lit::Str(s)) => {
            let shown = s
                .value()
                .trim()
                .parse::<f64>()
                .map_or(example.to_owned(), |_| s.value());
            Err(err(
                expr,
                format!("`{key}` takes a number, not a string: write `{key} = {shown}`"),
            ))
        }
        _ => Err(err(
            expr,
            format!(
                "`{key}` takes a number, e.g. `{key} = {example}`; found {}",
                kind_of(expr)
            ),
        )),
    }
}

/// A ratio in (0, 1].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Ratio(pub f64);

impl Value for Ratio {
    const EXAMPLE: &'static str = "0.5";
    fn parse(key: &str, expr: &Expr) -> Result<Self, Error> {
        let r = number(key, expr, "0.5")?;
        if r > 0.0 && r <= 1.0 {
            Ok(Ratio(r))
        } else {
            Err(err(
                expr,
                format!("`{key}` is a ratio in (0, 1], found `{r}`: write e.g. `{key} = 0.5` for half of the calls"),
            ))
        }
    }
}

/// The growth factor of exponential backoff: finite and >= 1.0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Multiplier(pub f64);

impl Value for Multiplier {
    const EXAMPLE: &'static str = "2.0";
    fn parse(key: &str, expr: &Expr) -> Result<Self, Error> {
        let m = number(key, expr, "2.0")?;
        if m.is_finite() && m >= 1.0 {
            Ok(Multiplier(m))
        } else {
            Err(err(
                expr,
                format!(
                    "`{key}` must be a finite number >= 1.0, found `{m}`: delays must not shrink"
                ),
            ))
        }
    }
}

/// A duration written with units, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Dur(pub u64);

impl Dur {
    pub(crate) const SECOND: Dur = Dur(1_000_000_000);
}

impl std::fmt::Display for Dur {
    /// The way attributes write durations: `250ms`, `2s`, `1m30s` (as the runtime's
    /// `format_duration`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ms = u128::from(self.0) / 1_000_000;
        if ms == 0 {
            return if self.0 == 0 {
                f.write_str("0ms")
            } else {
                write!(f, "{}us", self.0 / 1_000)
            };
        }
        for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

/// Parses `"250ms"`, `"2s"`, `"1m30s"`, `"1h"`, `"500us"`, `"100ns"` into nanoseconds,
/// as the runtime's `parse_duration` does; the error says what is wrong and the fix.
pub(crate) fn parse_duration(s: &str) -> Result<Dur, String> {
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
                    "invalid duration `{text}`: unknown unit `{}`; use `ms`, `s`, `m` or `h`",
                    other.trim()
                ))
            }
        };
        total = n
            .checked_mul(nanos_per)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("invalid duration `{text}`: too large"))?;
    }
    u64::try_from(total)
        .map(Dur)
        .map_err(|_| format!("invalid duration `{text}`: too large"))
}

fn string<'a>(key: &str, expr: &'a Expr, example: &str) -> Result<&'a syn::LitStr, Error> {
    match lit(expr) {
        Some(Lit::Str(s)) => Ok(s),
        Some(Lit::Int(i)) if example.ends_with('s') => Err(err(
            expr,
            format!(
                "`{key}` takes a string with a unit, not a bare number: write `{key} = \"{}s\"` or `\"{}ms\"`",
                i.base10_digits(),
                i.base10_digits()
            ),
        )),
        _ => Err(err(
            expr,
            format!("`{key}` takes a string, e.g. `{key} = \"{example}\"`; found {}", kind_of(expr)),
        )),
    }
}

impl Value for Dur {
    const EXAMPLE: &'static str = "\"5s\"";
    fn parse(key: &str, expr: &Expr) -> Result<Self, Error> {
        let s = string(key, expr, "5s")?;
        parse_duration(&s.value()).map_err(|m| err(expr, format!("`{key}`: {m}")))
    }
}

/// `window = 20` (calls) or `window = "60s"` (time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WindowValue {
    Calls(u32),
    Time(Dur),
}

impl Value for WindowValue {
    const EXAMPLE: &'static str = "20";
    fn parse(key: &str, expr: &Expr) -> Result<Self, Error> {
        match lit(expr) {
            Some(Lit::Str(s)) => parse_duration(&s.value())
                .map(WindowValue::Time)
                .map_err(|m| err(expr, format!("`{key}`: {m}"))),
            Some(Lit::Int(_)) => Count::parse(key, expr).map(|c| WindowValue::Calls(c.0)),
            _ if negative(expr).is_some() => Count::parse(key, expr).map(|c| WindowValue::Calls(c.0)),
            _ => Err(err(
                expr,
                format!(
                    "`{key}` is a number of calls (`{key} = 20`) or a duration (`{key} = \"60s\"`); found {}",
                    kind_of(expr)
                ),
            )),
        }
    }
}

/// `"100/s"`: permits per period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RateValue {
    pub permits: u32,
    pub per: Dur,
}

/// Parses `N/ms`, `N/s`, `N/m`, `N/h` as the runtime does.
pub(crate) fn parse_rate(s: &str) -> Result<RateValue, String> {
    let bad =
        || format!("invalid rate `{s}`: write it as `N/ms`, `N/s`, `N/m` or `N/h`, e.g. `100/s`");
    let (n, unit) = s.split_once('/').ok_or_else(bad)?;
    let permits: u32 = n.trim().parse().map_err(|_| bad())?;
    let per = match unit.trim() {
        "ms" => Dur(1_000_000),
        "s" => Dur(1_000_000_000),
        "m" => Dur(60_000_000_000),
        "h" => Dur(3_600_000_000_000),
        _ => return Err(bad()),
    };
    if permits == 0 {
        return Err(format!(
            "invalid rate `{s}`: the number of permits must be at least 1"
        ));
    }
    Ok(RateValue { permits, per })
}

impl Value for RateValue {
    const EXAMPLE: &'static str = "\"100/s\"";
    fn parse(key: &str, expr: &Expr) -> Result<Self, Error> {
        let s = string(key, expr, "100/s")?;
        parse_rate(&s.value()).map_err(|m| err(expr, format!("`{key}`: {m}")))
    }
}

/// A string naming one of a fixed set of choices.
macro_rules! choice {
    ($name:ident, $what:literal, $example:literal, { $($text:literal => $variant:ident,)* }) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) enum $name { $($variant,)* }

        impl $name {
            pub(crate) const fn variant(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant),)* }
            }
            #[allow(dead_code)]
            pub(crate) const fn text(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
        }

        impl Value for $name {
            const EXAMPLE: &'static str = concat!("\"", $example, "\"");
            fn parse(key: &str, expr: &Expr) -> Result<Self, Error> {
                const CHOICES: &str = concat!($("`", $text, "`, ",)*);
                let choices = CHOICES.trim_end_matches(", ");
                if let Expr::Path(p) = peel(expr) {
                    if let Some(id) = p.path.get_ident() {
                        return Err(err(expr, format!(
                            "`{key}` takes a string: write `{key} = \"{id}\"` (one of {choices})"
                        )));
                    }
                }
                let s = string(key, expr, $example)?;
                match s.value().as_str() {
                    $($text => Ok($name::$variant),)*
                    other => Err(err(expr, format!(
                        "unknown {} `{other}`: expected one of {choices}", $what
                    ))),
                }
            }
        }
    };
}

choice!(StrategyValue, "strategy", "balanced", {
    "aggressive" => Aggressive,
    "balanced" => Balanced,
    "conservative" => Conservative,
    "critical" => Critical,
});

choice!(BackoffValue, "backoff", "exponential", {
    "fixed" => Fixed,
    "linear" => Linear,
    "exponential" => Exponential,
});

choice!(JitterValue, "jitter", "full", {
    "none" => None,
    "full" => Full,
    "equal" => Equal,
    "decorrelated" => Decorrelated,
});

/// The path of a function: `record_if = is_transient`, `fallback = Self::canned`.
#[derive(Clone, Debug)]
pub(crate) struct FnPath(pub ExprPath);

impl FnPath {
    fn expected(key: &str) -> &'static str {
        match key {
            "retry_after" => "a function `fn(&E) -> Option<Duration>`",
            "fallback" => "a function taking the function's arguments (and optionally its error)",
            _ => "a function `fn(&E) -> bool`",
        }
    }

    fn example(key: &str) -> &'static str {
        match key {
            "retry_after" => "retry_after = hint_from_server",
            "fallback" => "fallback = Self::cached",
            "record_if" => "record_if = is_transient",
            "ignore_if" => "ignore_if = is_not_found",
            _ => "retry_if = is_transient",
        }
    }

    pub(crate) fn parse_with(key: &str, expr: &Expr) -> Result<Self, Error> {
        let expected = FnPath::expected(key);
        let example = FnPath::example(key);
        match peel(expr) {
            Expr::Path(p) => Ok(FnPath(p.clone())),
            Expr::Closure(_) => Err(err(
                expr,
                format!(
                    "`{key}` takes the path of {expected}, not a closure: move the closure into a named `fn` and write e.g. `{example}`"
                ),
            )),
            Expr::Lit(syn::ExprLit { lit: Lit::Str(s), .. }) => Err(err(
                expr,
                format!("`{key}` takes a path, not a string: write `{key} = {}`", s.value()),
            )),
            _ => Err(err(
                expr,
                format!("`{key}` takes the path of {expected}, e.g. `{example}`; found {}", kind_of(expr)),
            )),
        }
    }
}

impl Value for FnPath {
    const EXAMPLE: &'static str = "path::to::function";
    fn parse(key: &str, expr: &Expr) -> Result<Self, Error> {
        FnPath::parse_with(key, expr)
    }
}

/// `service = "payments"` or `service = <expr>`.
#[derive(Clone, Debug)]
pub(crate) enum ServiceValue {
    Fixed(String),
    Computed(Expr),
}

impl Value for ServiceValue {
    const EXAMPLE: &'static str = "\"payments\"";
    fn parse(key: &str, expr: &Expr) -> Result<Self, Error> {
        match lit(expr) {
            Some(Lit::Str(s)) if s.value().trim().is_empty() => Err(err(
                expr,
                format!("`{key}` cannot be empty: name the service, e.g. `{key} = \"payments\"`"),
            )),
            Some(Lit::Str(s)) => Ok(ServiceValue::Fixed(s.value())),
            Some(_) => Err(err(
                expr,
                format!(
                    "`{key}` takes a string literal (`{key} = \"payments\"`) or an expression giving a `&str` or `String` (`{key} = self.tenant.as_str()`); found {}",
                    kind_of(expr)
                ),
            )),
            None => Ok(ServiceValue::Computed(expr.clone())),
        }
    }
}

/// `crate = "path"`: where the runtime crate is (its hidden module is appended).
#[derive(Clone, Debug)]
pub(crate) struct CratePath(pub syn::Path);

impl Value for CratePath {
    const EXAMPLE: &'static str = "\"::resilience_runtime\"";
    fn parse(key: &str, expr: &Expr) -> Result<Self, Error> {
        match peel(expr) {
            Expr::Lit(syn::ExprLit { lit: Lit::Str(s), .. }) => s.parse::<syn::Path>().map(CratePath).map_err(|_| {
                err(expr, format!("`{key}` must be a path, e.g. `{key} = \"::resilience_runtime\"`"))
            }),
            Expr::Path(p) if p.qself.is_none() => Ok(CratePath(p.path.clone())),
            _ => Err(err(
                expr,
                format!(
                    "`{key}` takes the path of the runtime crate as a string, e.g. `{key} = \"::resilience_runtime\"`; found {}",
                    kind_of(expr)
                ),
            )),
        }
    }
}

/// The keys of a circuit breaker.
#[derive(Clone, Debug, Default, FromMeta)]
pub(crate) struct BreakerKeys {
    pub failure_threshold: Option<Spanned<Count>>,
    pub failure_rate: Option<Spanned<Ratio>>,
    pub window: Option<Spanned<WindowValue>>,
    pub min_calls: Option<Spanned<Count>>,
    pub slow_call: Option<Spanned<Dur>>,
    pub slow_call_rate: Option<Spanned<Ratio>>,
    pub cooldown: Option<Spanned<Dur>>,
    pub cooldown_max: Option<Spanned<Dur>>,
    pub half_open_calls: Option<Spanned<Count>>,
    pub success_threshold: Option<Spanned<Count>>,
    pub record_if: Option<Spanned<FnPath>>,
    pub ignore_if: Option<Spanned<FnPath>>,
}

/// The keys of a retry.
#[derive(Clone, Debug, Default, FromMeta)]
pub(crate) struct RetryKeys {
    pub max_attempts: Option<Spanned<Count>>,
    pub delay: Option<Spanned<Dur>>,
    pub backoff: Option<Spanned<BackoffValue>>,
    pub multiplier: Option<Spanned<Multiplier>>,
    pub max_delay: Option<Spanned<Dur>>,
    pub jitter: Option<Spanned<JitterValue>>,
    pub max_elapsed: Option<Spanned<Dur>>,
    pub retry_if: Option<Spanned<FnPath>>,
    pub retry_after: Option<Spanned<FnPath>>,
}

/// The keys of a bulkhead.
#[derive(Clone, Debug, Default, FromMeta)]
pub(crate) struct BulkheadKeys {
    pub max_concurrent: Option<Spanned<Count>>,
    pub max_wait: Option<Spanned<Dur>>,
}

/// The keys of a rate limit.
#[derive(Clone, Debug, Default, FromMeta)]
pub(crate) struct RateLimitKeys {
    pub rate: Option<Spanned<RateValue>>,
    pub burst: Option<Spanned<Count>>,
    pub max_wait: Option<Spanned<Dur>>,
}

/// `#[with_resilience(..)]`.
#[derive(Clone, Debug, Default, FromMeta)]
pub(crate) struct WithResilienceArgs {
    pub circuit_breaker: Option<Group<BreakerKeys>>,
    pub retry: Option<Group<RetryKeys>>,
    pub timeout: Option<Spanned<Dur>>,
    pub total_timeout: Option<Spanned<Dur>>,
    pub bulkhead: Option<Group<BulkheadKeys>>,
    pub rate_limit: Option<Group<RateLimitKeys>>,
    pub fallback: Option<Spanned<FnPath>>,
    pub strategy: Option<Spanned<StrategyValue>>,
    pub service: Option<Spanned<ServiceValue>>,
    #[darling(rename = "crate")]
    pub krate: Option<Spanned<CratePath>>,
}

/// `#[circuit_breaker(..)]`.
#[derive(Clone, Debug, Default, FromMeta)]
pub(crate) struct BreakerArgs {
    #[darling(flatten)]
    pub keys: BreakerKeys,
    pub strategy: Option<Spanned<StrategyValue>>,
    pub service: Option<Spanned<ServiceValue>>,
    #[darling(rename = "crate")]
    pub krate: Option<Spanned<CratePath>>,
}

/// `#[with_retry(..)]`.
#[derive(Clone, Debug, Default, FromMeta)]
pub(crate) struct RetryArgs {
    #[darling(flatten)]
    pub keys: RetryKeys,
    pub strategy: Option<Spanned<StrategyValue>>,
    pub service: Option<Spanned<ServiceValue>>,
    #[darling(rename = "crate")]
    pub krate: Option<Spanned<CratePath>>,
}

/// `#[bulkhead(..)]`.
#[derive(Clone, Debug, Default, FromMeta)]
pub(crate) struct BulkheadArgs {
    #[darling(flatten)]
    pub keys: BulkheadKeys,
    pub service: Option<Spanned<ServiceValue>>,
    #[darling(rename = "crate")]
    pub krate: Option<Spanned<CratePath>>,
}

/// `#[rate_limit(..)]`.
#[derive(Clone, Debug, Default, FromMeta)]
pub(crate) struct RateLimitArgs {
    #[darling(flatten)]
    pub keys: RateLimitKeys,
    pub service: Option<Spanned<ServiceValue>>,
    #[darling(rename = "crate")]
    pub krate: Option<Spanned<CratePath>>,
}

/// `#[timeout("5s", ..)]`: the keys after the positional duration.
#[derive(Clone, Debug, Default, FromMeta)]
pub(crate) struct TimeoutArgs {
    pub total_timeout: Option<Spanned<Dur>>,
    pub service: Option<Spanned<ServiceValue>>,
    #[darling(rename = "crate")]
    pub krate: Option<Spanned<CratePath>>,
}

/// `#[fallback(path, ..)]`: the keys after the positional path.
#[derive(Clone, Debug, Default, FromMeta)]
pub(crate) struct FallbackArgs {
    pub service: Option<Spanned<ServiceValue>>,
    #[darling(rename = "crate")]
    pub krate: Option<Spanned<CratePath>>,
}

/// One attribute, read.
#[derive(Clone, Debug)]
pub(crate) enum Parsed {
    WithResilience(Box<WithResilienceArgs>),
    CircuitBreaker(Box<BreakerArgs>),
    WithRetry(Box<RetryArgs>),
    Timeout(Option<Spanned<Dur>>, TimeoutArgs),
    Bulkhead(BulkheadArgs),
    RateLimit(RateLimitArgs),
    Fallback(Option<Spanned<FnPath>>, FallbackArgs),
}

/// How an attribute was written.
#[derive(Clone, Debug)]
pub(crate) enum AttrArgs {
    /// `#[x]` or `#[x(..)]`: the tokens inside the parentheses.
    List(TokenStream),
    /// `#[fallback = path]`.
    Value(Expr),
}

/// An attribute of ours: the one being expanded or one found below it.
#[derive(Clone, Debug)]
pub(crate) struct Attr {
    pub kind: AttrKind,
    /// The attribute's path, for errors about the attribute as a whole.
    pub span: Span,
    pub args: AttrArgs,
}

/// Reads one attribute. Errors are darling errors, polished later.
pub(crate) fn parse_attr(attr: &Attr) -> darling::Result<Parsed> {
    let name = attr.kind.name();
    let tokens = match &attr.args {
        AttrArgs::Value(expr) => {
            return match attr.kind {
                AttrKind::Fallback => FnPath::parse_with("fallback", expr).map(|p| {
                    Parsed::Fallback(
                        Some(Spanned {
                            value: p,
                            key: attr.span,
                            span: expr.span(),
                        }),
                        FallbackArgs::default(),
                    )
                }),
                _ => Err(Error::custom(format!(
                    "`#[{name} = ..]` is not a form of this attribute: write `#[{name}(..)]`"
                ))
                .with_span(&attr.span)),
            };
        }
        AttrArgs::List(tokens) => tokens.clone(),
    };
    match attr.kind {
        AttrKind::Fallback => return parse_fallback(attr, tokens),
        AttrKind::Timeout => return parse_timeout(attr, tokens),
        _ => {}
    }
    let items = NestedMeta::parse_meta_list(tokens)?;
    let mut errors = Error::accumulator();
    let items: Vec<NestedMeta> = items
        .into_iter()
        .filter(|item| match item {
            NestedMeta::Lit(l) => {
                errors.push(
                    Error::custom(format!(
                        "`#[{name}]` takes `key = value` pairs, not a bare value: write e.g. `#[{name}({})]`",
                        attr_example(attr.kind)
                    ))
                    .with_span(l),
                );
                false
            }
            NestedMeta::Meta(_) => true,
        })
        .collect();
    let parsed = match attr.kind {
        AttrKind::WithResilience => errors
            .handle(WithResilienceArgs::from_list(&items))
            .map(|a| Parsed::WithResilience(Box::new(a))),
        AttrKind::CircuitBreaker => errors
            .handle(BreakerArgs::from_list(&items))
            .map(|a| Parsed::CircuitBreaker(Box::new(a))),
        AttrKind::WithRetry => errors
            .handle(RetryArgs::from_list(&items))
            .map(|a| Parsed::WithRetry(Box::new(a))),
        AttrKind::Bulkhead => errors
            .handle(BulkheadArgs::from_list(&items))
            .map(Parsed::Bulkhead),
        AttrKind::RateLimit => errors
            .handle(RateLimitArgs::from_list(&items))
            .map(Parsed::RateLimit),
        AttrKind::Timeout | AttrKind::Fallback => unreachable!("handled above"),
    };
    errors.finish()?;
    Ok(parsed.expect("no error, so a value"))
}

fn attr_example(kind: AttrKind) -> &'static str {
    match kind {
        AttrKind::WithResilience => "timeout = \"5s\", retry(max_attempts = 3)",
        AttrKind::CircuitBreaker => "failure_rate = 0.5, cooldown = \"30s\"",
        AttrKind::WithRetry => "max_attempts = 3, delay = \"100ms\"",
        AttrKind::Timeout => "\"5s\"",
        AttrKind::Bulkhead => "max_concurrent = 10",
        AttrKind::RateLimit => "rate = \"100/s\"",
        AttrKind::Fallback => "Self::cached",
    }
}

/// `#[timeout("5s")]`, `#[timeout("5s", total_timeout = "30s")]`, `#[timeout(total_timeout = "30s")]`.
fn parse_timeout(attr: &Attr, tokens: TokenStream) -> darling::Result<Parsed> {
    if tokens.is_empty() {
        return Err(Error::custom(
            "`#[timeout]` needs a duration: write `#[timeout(\"5s\")]` (a limit on each attempt)",
        )
        .with_span(&attr.span));
    }
    let mut items = NestedMeta::parse_meta_list(tokens)?;
    if let Some(NestedMeta::Lit(Lit::Int(i))) = items.first() {
        let n = i.base10_digits();
        return Err(Error::custom(format!(
            "`#[timeout]` takes a string with a unit, not a bare number: write `#[timeout(\"{n}s\")]` or `#[timeout(\"{n}ms\")]`"
        ))
        .with_span(i));
    }
    let mut errors = Error::accumulator();
    let mut timeout = None;
    if let Some(NestedMeta::Lit(l)) = items.first() {
        let expr = Expr::Lit(syn::ExprLit {
            attrs: vec![],
            lit: l.clone(),
        });
        timeout = errors
            .handle(Dur::parse("timeout", &expr).map_err(|e| e.with_span(l)))
            .map(|value| Spanned {
                value,
                key: l.span(),
                span: l.span(),
            });
        items.remove(0);
    }
    for item in &items {
        if let NestedMeta::Lit(l) = item {
            errors.push(
                Error::custom("`#[timeout]` takes one duration first, then `key = value` pairs: write `#[timeout(\"5s\", total_timeout = \"30s\")]`")
                    .with_span(l),
            );
        }
    }
    items.retain(|i| matches!(i, NestedMeta::Meta(_)));
    let args = errors.handle(TimeoutArgs::from_list(&items));
    errors.finish()?;
    let args = args.expect("no error, so a value");
    if timeout.is_none() && args.total_timeout.is_none() {
        return Err(Error::custom(
            "`#[timeout]` needs a duration: write `#[timeout(\"5s\")]` (a limit on each attempt)",
        )
        .with_span(&attr.span));
    }
    Ok(Parsed::Timeout(timeout, args))
}

/// `#[fallback(path)]`, `#[fallback(path, service = "x")]`.
fn parse_fallback(attr: &Attr, tokens: TokenStream) -> darling::Result<Parsed> {
    let missing = || {
        Error::custom(
            "`#[fallback]` needs the path of a function: write `#[fallback(Self::cached)]`",
        )
        .with_span(&attr.span)
    };
    if tokens.is_empty() {
        return Err(missing());
    }
    let mut items = match NestedMeta::parse_meta_list(tokens.clone()) {
        Ok(items) => items,
        Err(e) => {
            // Not a list of metas: a closure or some other expression first.
            let parser = syn::punctuated::Punctuated::<Expr, syn::Token![,]>::parse_terminated;
            return Err(match syn::parse::Parser::parse2(parser, tokens) {
                Ok(exprs) => match exprs.first() {
                    Some(first) => FnPath::parse_with("fallback", first)
                        .err()
                        .unwrap_or_else(|| Error::from(e)),
                    None => missing(),
                },
                Err(_) => Error::from(e),
            });
        }
    };
    let path = match items.first() {
        Some(NestedMeta::Meta(Meta::Path(p))) => {
            let p = p.clone();
            items.remove(0);
            Spanned {
                value: FnPath(ExprPath {
                    attrs: vec![],
                    qself: None,
                    path: p.clone(),
                }),
                key: attr.span,
                span: p.span(),
            }
        }
        Some(NestedMeta::Lit(l)) => {
            let expr = Expr::Lit(syn::ExprLit {
                attrs: vec![],
                lit: l.clone(),
            });
            return Err(FnPath::parse_with("fallback", &expr)
                .err()
                .unwrap_or_else(missing)
                .with_span(l));
        }
        _ => return Err(missing()),
    };
    let args = FallbackArgs::from_list(&items)?;
    Ok(Parsed::Fallback(Some(path), args))
}

/// Turns darling's errors into ours: lowercase, keys in backticks, the fix said.
/// `context` names the attribute, e.g. "`#[with_retry]`".
pub(crate) fn polish(error: Error, context: &str) -> Vec<syn::Error> {
    error
        .flatten()
        .into_iter()
        .map(|e| {
            let span = e.span();
            syn::Error::new(span, polish_message(&e.to_string(), context))
        })
        .collect()
}

pub(crate) fn polish_message(raw: &str, context: &str) -> String {
    // darling appends " at <location>" (the key or group path); we point at the token.
    let (msg, location) = match raw.rsplit_once(" at ") {
        Some((m, loc))
            if !loc.is_empty()
                && loc
                    .chars()
                    .all(|c| c.is_alphanumeric() || "_/[]".contains(c)) =>
        {
            (m, Some(loc))
        }
        _ => (raw, None),
    };
    let place = match location.and_then(|l| l.split('/').next()) {
        Some(group @ ("circuit_breaker" | "retry" | "bulkhead" | "rate_limit")) => {
            format!("`{group}(..)`")
        }
        _ => context.to_owned(),
    };
    if let Some(rest) = msg.strip_prefix("Unknown field: `") {
        let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
        if let Some(sugg) = tail.strip_prefix(". Did you mean `") {
            let sugg = sugg.trim_end_matches("`?");
            return format!("unknown key `{name}` in {place}: did you mean `{sugg}`?");
        }
        if let Some(alts) = tail.strip_prefix(". Available values: ") {
            return format!("unknown key `{name}` in {place}; expected one of {alts}");
        }
        return format!("unknown key `{name}` in {place}");
    }
    if let Some(rest) = msg.strip_prefix("Duplicate field `") {
        let name = rest.trim_end_matches('`');
        return format!("`{name}` is given twice in {place}: keep one");
    }
    if msg.starts_with("Unexpected meta-item format `literal`") {
        return format!("{place} takes `key = value` pairs, not a bare value");
    }
    let mut chars = msg.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
