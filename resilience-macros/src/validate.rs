//! Checks across keys (the runtime's `validate()`, moved to compile time) and checks
//! of the function the attributes are on. Every problem becomes an error at the key,
//! value or token at fault; all are reported together.

use syn::spanned::Spanned as _;
use syn::{GenericArgument, PathArguments, ReturnType, Signature, Type, TypeParamBound};

use crate::model::Model;
use crate::parse::{Dur, StrategyValue, WindowValue};

/// The largest count window, as the runtime's `MAX_WINDOW_CALLS`.
const MAX_WINDOW_CALLS: u32 = 1 << 20;
/// The most probes / successful probes, as the runtime checks.
const MAX_PROBES: u32 = 1 << 12;

/// The preset values a cross-key check compares a written key with (the runtime's
/// `Strategy::preset` table).
struct Preset {
    window_calls: u32,
    cooldown: Dur,
    delay: Dur,
}

const fn ms(n: u64) -> Dur {
    Dur(n * 1_000_000)
}

fn preset(s: StrategyValue) -> Preset {
    let (window_calls, cooldown, delay) = match s {
        StrategyValue::Aggressive => (10, ms(60_000), ms(50)),
        StrategyValue::Balanced => (20, ms(30_000), ms(100)),
        StrategyValue::Conservative => (50, ms(15_000), ms(200)),
        StrategyValue::Critical => (20, ms(10_000), ms(100)),
    };
    Preset {
        window_calls,
        cooldown,
        delay,
    }
}

/// Checks what no single value can show: modes, windows, caps, and keys that need an
/// `async fn`.
pub(crate) fn check_policy(m: &Model, is_async: bool, errors: &mut Vec<syn::Error>) {
    let strategy = m
        .strategy
        .as_ref()
        .map_or(StrategyValue::Balanced, |s| s.value);
    let p = preset(strategy);
    let from_preset = |what: &str| format!("the `{}` strategy's {what}", strategy.text());

    if m.breaker.present() {
        let b = &m.breaker.keys;
        if let Some(ft) = &b.failure_threshold {
            let rate_keys = [
                ("failure_rate", b.failure_rate.is_some()),
                ("window", b.window.is_some()),
                ("min_calls", b.min_calls.is_some()),
                ("slow_call_rate", b.slow_call_rate.is_some()),
            ];
            if let Some((other, _)) = rate_keys.iter().find(|(_, given)| *given) {
                errors.push(syn::Error::new(
                    ft.key,
                    format!(
                        "`failure_threshold` (consecutive mode) cannot be combined with `{other}` (rate mode): keep one mode"
                    ),
                ));
            }
        }
        if let Some(w) = &b.window {
            match w.value {
                WindowValue::Calls(n) if n > MAX_WINDOW_CALLS => errors.push(syn::Error::new(
                    w.span,
                    format!("`window` of {n} calls is more than the largest window, {MAX_WINDOW_CALLS} calls"),
                )),
                WindowValue::Time(d) if d < Dur::SECOND => errors.push(syn::Error::new(
                    w.span,
                    format!("`window` of `{d}` is shorter than the shortest time window, `1s`: widen it or count calls (`window = 20`)"),
                )),
                _ => {}
            }
        }
        if let (Some(min), None) = (&b.min_calls, &b.failure_threshold) {
            let window = match b.window.as_ref().map(|w| w.value) {
                Some(WindowValue::Calls(n)) => Some((n, format!("the window ({n} calls)"))),
                Some(WindowValue::Time(_)) => None,
                None => Some((
                    p.window_calls,
                    format!("{} ({} calls)", from_preset("window"), p.window_calls),
                )),
            };
            if let Some((n, what)) = window {
                if min.value.0 > n {
                    errors.push(syn::Error::new(
                        min.span,
                        format!(
                            "`min_calls` = {} is more than {what}: the breaker could never decide; lower `min_calls` or widen `window`",
                            min.value.0
                        ),
                    ));
                }
            }
        }
        for (key, d) in [("slow_call", &b.slow_call), ("cooldown", &b.cooldown)] {
            if let Some(d) = d {
                if d.value.0 == 0 {
                    errors.push(syn::Error::new(
                        d.span,
                        format!("`{key}` must be longer than `0s`"),
                    ));
                }
            }
        }
        if let Some(max) = &b.cooldown_max {
            let (cooldown, what) = match &b.cooldown {
                Some(c) => (c.value, format!("`cooldown` (`{}`)", c.value)),
                None => (
                    p.cooldown,
                    format!("{} (`{}`)", from_preset("cooldown"), p.cooldown),
                ),
            };
            if max.value < cooldown {
                errors.push(syn::Error::new(
                    max.span,
                    format!(
                        "`cooldown_max` (`{}`) is below {what}: the cap must be at least the first cooldown; raise `cooldown_max` or lower `cooldown`",
                        max.value
                    ),
                ));
            }
        }
        for (key, n) in [
            ("half_open_calls", &b.half_open_calls),
            ("success_threshold", &b.success_threshold),
        ] {
            if let Some(n) = n {
                if n.value.0 > MAX_PROBES {
                    errors.push(syn::Error::new(
                        n.span,
                        format!("`{key}` must be at most {MAX_PROBES}"),
                    ));
                }
            }
        }
    }

    if m.retry.present() {
        let r = &m.retry.keys;
        if let Some(max) = &r.max_delay {
            let (delay, what) = match &r.delay {
                Some(d) => (d.value, format!("`delay` (`{}`)", d.value)),
                None => (p.delay, format!("{} (`{}`)", from_preset("delay"), p.delay)),
            };
            if max.value < delay {
                errors.push(syn::Error::new(
                    max.span,
                    format!(
                        "`max_delay` (`{}`) is below {what}: the cap must be at least the first delay; raise `max_delay` or lower `delay`",
                        max.value
                    ),
                ));
            }
        }
        if let Some(e) = &r.max_elapsed {
            if e.value.0 == 0 {
                errors.push(syn::Error::new(
                    e.span,
                    "`max_elapsed` must be longer than `0s`",
                ));
            }
        }
    }

    for (key, t) in [("timeout", &m.timeout), ("total_timeout", &m.total_timeout)] {
        let Some(t) = t else { continue };
        if !is_async {
            errors.push(syn::Error::new(
                t.key,
                format!(
                    "`{key}` needs an `async fn`: a sync function cannot be interrupted; make the function `async` or remove `{key}`"
                ),
            ));
        } else if t.value.0 == 0 {
            errors.push(syn::Error::new(
                t.span,
                format!("`{key}` must be longer than `0s`"),
            ));
        }
    }
}

/// How the function runs.
#[derive(Clone, Debug)]
pub(crate) enum Shape {
    /// `async fn .. -> Result<T, E>`.
    Async,
    /// `fn .. -> Result<T, E>`.
    Sync,
    /// `fn .. -> Pin<Box<dyn Future<Output = Result<T, E>> + ..>>` whose body is
    /// `Box::pin(async move { .. })`: what `#[async_trait]` makes of an `async fn`.
    Boxed { output: Box<Type> },
}

/// Checks the signature; `None` when the function cannot take the attribute.
pub(crate) fn check_fn(
    sig: &Signature,
    name: &str,
    boxed_body: bool,
    errors: &mut Vec<syn::Error>,
) -> Option<Shape> {
    let before = errors.len();
    if let Some(c) = &sig.constness {
        errors.push(syn::Error::new(
            c.span,
            format!("`#[{name}]` cannot go on a `const fn`: the policies run at run time; remove `const`"),
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new(
            abi.extern_token.span,
            format!("`#[{name}]` cannot go on an `extern` function: remove the ABI, or wrap a Rust function"),
        ));
    }
    if let Some(v) = &sig.variadic {
        errors.push(syn::Error::new(
            v.dots.spans[0],
            format!("`#[{name}]` cannot go on a variadic function"),
        ));
    }
    let shape = if sig.asyncness.is_some() {
        Shape::Async
    } else if let (Some(output), true) = (boxed_future_output(&sig.output), boxed_body) {
        Shape::Boxed {
            output: Box::new(output.clone()),
        }
    } else {
        Shape::Sync
    };
    let ret = match &shape {
        Shape::Boxed { output } => Some(&**output),
        _ => match &sig.output {
            ReturnType::Type(_, ty) => Some(&**ty),
            ReturnType::Default => None,
        },
    };
    match ret {
        None => errors.push(syn::Error::new(
            sig.paren_token.span.close(),
            format!(
                "`#[{name}]` needs a function returning `Result<T, E>`; this one returns nothing: add `-> Result<(), E>`"
            ),
        )),
        Some(ty) => {
            if let Some(what) = plainly_not_result(ty, matches!(shape, Shape::Sync)) {
                errors.push(syn::Error::new(
                    ty.span(),
                    format!(
                        "`#[{name}]` needs a function returning `Result<T, E>`; {what}: the policies decide on errors, so return `Result<T, E>` (or an alias of it)"
                    ),
                ));
            }
        }
    }
    (errors.len() == before).then_some(shape)
}

/// Why a return type is plainly not a `Result`, when it can be told from its syntax.
fn plainly_not_result(ty: &Type, sync: bool) -> Option<String> {
    const NOT_RESULT: &[&str] = &[
        "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize",
        "f32", "f64", "bool", "char", "str", "String", "Option", "Vec", "Box", "Arc", "Rc",
        "HashMap", "BTreeMap",
    ];
    match ty {
        Type::Group(g) => plainly_not_result(&g.elem, sync),
        Type::Paren(p) => plainly_not_result(&p.elem, sync),
        Type::Tuple(t) if t.elems.is_empty() => Some("`()` is not a `Result`".into()),
        Type::Tuple(_) => Some("a tuple is not a `Result`".into()),
        Type::Reference(_) => Some("a reference is not a `Result`".into()),
        Type::Ptr(_) => Some("a pointer is not a `Result`".into()),
        Type::Array(_) | Type::Slice(_) => Some("an array is not a `Result`".into()),
        Type::Never(_) => Some("`!` is not a `Result`".into()),
        Type::BareFn(_) => Some("a function pointer is not a `Result`".into()),
        Type::TraitObject(_) => Some("a trait object is not a `Result`".into()),
        Type::ImplTrait(it) => {
            let future = it.bounds.iter().any(|b| match b {
                TypeParamBound::Trait(t) => {
                    t.path.segments.last().is_some_and(|s| s.ident == "Future")
                }
                _ => false,
            });
            Some(if future && sync {
                "`impl Future` is not a `Result`; write the function as an `async fn` returning `Result<T, E>`".into()
            } else {
                "an `impl Trait` is not a `Result`".into()
            })
        }
        Type::Path(p) if p.qself.is_none() => {
            let last = p.path.segments.last()?;
            let name = last.ident.to_string();
            NOT_RESULT
                .contains(&name.as_str())
                .then(|| format!("`{name}` is not a `Result`"))
        }
        _ => None,
    }
}

/// `R` of `Pin<Box<dyn Future<Output = R> + ..>>`.
pub(crate) fn boxed_future_output(output: &ReturnType) -> Option<&Type> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    let pin = last_generic(ty, "Pin")?;
    let boxed = last_generic(pin, "Box")?;
    let Type::TraitObject(obj) = boxed else {
        return None;
    };
    obj.bounds.iter().find_map(|b| {
        let TypeParamBound::Trait(t) = b else {
            return None;
        };
        let seg = t.path.segments.last()?;
        if seg.ident != "Future" {
            return None;
        }
        let PathArguments::AngleBracketed(args) = &seg.arguments else {
            return None;
        };
        args.args.iter().find_map(|a| match a {
            GenericArgument::AssocType(at) if at.ident == "Output" => Some(&at.ty),
            _ => None,
        })
    })
}

/// The single type argument of a path type whose last segment is `name`.
fn last_generic<'a>(ty: &'a Type, name: &str) -> Option<&'a Type> {
    let Type::Path(p) = ty else { return None };
    let seg = p.path.segments.last()?;
    if seg.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &seg.arguments else {
        return None;
    };
    args.args.iter().find_map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    })
}
