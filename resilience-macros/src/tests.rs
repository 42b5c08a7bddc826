//! Parse, validate and expand on plain token streams. Where the errors point and how
//! the expansion compiles against the runtime are the ui-tests' job.

use proc_macro2::{TokenStream, TokenTree};
use quote::quote;

use crate::expand::expand;
use crate::parse::{parse_duration, parse_rate, polish_message, AttrKind, Dur};

/// The messages of the `compile_error!`s in an expansion.
fn errors(out: &TokenStream) -> Vec<String> {
    let trees: Vec<TokenTree> = out.clone().into_iter().collect();
    let mut found = Vec::new();
    for w in trees.windows(3) {
        if let [TokenTree::Ident(id), TokenTree::Punct(bang), TokenTree::Group(g)] = w {
            if id == "compile_error" && bang.as_char() == '!' {
                let lit: syn::LitStr = syn::parse2(g.stream()).expect("a string");
                found.push(lit.value());
            }
        }
    }
    found
}

fn run(kind: AttrKind, args: TokenStream, item: TokenStream) -> (Vec<String>, String) {
    let out = expand(kind, args, item);
    (errors(&out), out.to_string())
}

fn one_error(kind: AttrKind, args: TokenStream, item: TokenStream) -> String {
    let (errors, _) = run(kind, args, item);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().unwrap()
}

fn sync_fn() -> TokenStream {
    quote!(
        fn f(x: u32) -> Result<u32, E> {
            Ok(x)
        }
    )
}

fn async_fn() -> TokenStream {
    quote!(
        async fn f(x: u32) -> Result<u32, E> {
            Ok(x)
        }
    )
}

#[test]
fn durations_parse_like_the_runtime() {
    assert_eq!(parse_duration("250ms"), Ok(Dur(250_000_000)));
    assert_eq!(parse_duration("2s"), Ok(Dur(2_000_000_000)));
    assert_eq!(parse_duration("1m30s"), Ok(Dur(90_000_000_000)));
    assert_eq!(parse_duration("1h"), Ok(Dur(3_600_000_000_000)));
    assert_eq!(parse_duration("500us"), Ok(Dur(500_000)));
    assert_eq!(parse_duration("100ns"), Ok(Dur(100)));
    assert_eq!(parse_duration(" 0ms "), Ok(Dur(0)));
    assert!(parse_duration("30").unwrap_err().contains("missing unit"));
    assert!(parse_duration("5x")
        .unwrap_err()
        .contains("unknown unit `x`"));
    assert!(parse_duration("5 seconds")
        .unwrap_err()
        .contains("unknown unit `seconds`"));
    assert!(parse_duration("ms")
        .unwrap_err()
        .contains("expected a number"));
    assert!(parse_duration("").unwrap_err().contains("empty"));
    assert!(parse_duration("99999999999999999999h").is_err());
    assert!(parse_duration("600000d").unwrap_err().contains("too large"));
}

#[test]
fn durations_format_like_the_runtime() {
    assert_eq!(Dur(90_500_000_000).to_string(), "1m30s500ms");
    assert_eq!(Dur(0).to_string(), "0ms");
    assert_eq!(Dur(500_000).to_string(), "500us");
    assert_eq!(Dur::SECOND.to_string(), "1s");
}

#[test]
fn rates_parse_like_the_runtime() {
    let r = parse_rate("100/s").unwrap();
    assert_eq!((r.permits, r.per), (100, Dur::SECOND));
    assert_eq!(parse_rate("5/ms").unwrap().per, Dur(1_000_000));
    assert_eq!(parse_rate("10/m").unwrap().per, Dur(60_000_000_000));
    assert_eq!(parse_rate("1/h").unwrap().per, Dur(3_600_000_000_000));
    assert!(parse_rate("0/s").unwrap_err().contains("at least 1"));
    assert!(parse_rate("10/week").unwrap_err().contains("`N/ms`"));
    assert!(parse_rate("ten/s").is_err());
}

#[test]
fn darling_messages_are_rewritten() {
    assert_eq!(
        polish_message(
            "Unknown field: `max_atempts`. Did you mean `max_attempts`? at max_atempts",
            "`#[with_retry]`"
        ),
        "unknown key `max_atempts` in `#[with_retry]`: did you mean `max_attempts`?"
    );
    assert_eq!(
        polish_message(
            "Unknown field: `x`. Did you mean `window`? at circuit_breaker",
            "`#[with_resilience]`"
        ),
        "unknown key `x` in `circuit_breaker(..)`: did you mean `window`?"
    );
    assert_eq!(
        polish_message("Duplicate field `delay`", "`#[with_retry]`"),
        "`delay` is given twice in `#[with_retry]`: keep one"
    );
    assert_eq!(
        polish_message("Some problem at retry/delay", "`#[x]`"),
        "some problem"
    );
}

#[test]
fn unknown_keys_suggest_the_closest() {
    let e = one_error(AttrKind::WithRetry, quote!(max_atempts = 3), sync_fn());
    assert_eq!(
        e,
        "unknown key `max_atempts` in `#[with_retry]`: did you mean `max_attempts`?"
    );
    let e = one_error(
        AttrKind::WithResilience,
        quote!(retry(jiter = "full")),
        sync_fn(),
    );
    assert_eq!(
        e,
        "unknown key `jiter` in `retry(..)`: did you mean `jitter`?"
    );
    let e = one_error(
        AttrKind::WithResilience,
        quote!(circuit_braker(failure_rate = 0.5)),
        sync_fn(),
    );
    assert!(e.contains("did you mean `circuit_breaker`?"), "{e}");
}

#[test]
fn every_error_is_reported_at_once() {
    let (errors, out) = run(
        AttrKind::WithResilience,
        quote!(
            retry(max_attempts = 0, delay = "5x"),
            circuit_breaker(failure_rate = 2.0),
            bogus = 1
        ),
        async_fn(),
    );
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(errors
        .iter()
        .any(|e| e.contains("`max_attempts` must be at least 1")));
    assert!(errors.iter().any(|e| e.contains("unknown unit `x`")));
    assert!(errors
        .iter()
        .any(|e| e.contains("`failure_rate` is a ratio in (0, 1], found `2`")));
    assert!(errors.iter().any(|e| e.contains("unknown key `bogus`")));
    // The function is still emitted, as written.
    assert!(
        out.contains("async fn f (x : u32) -> Result < u32 , E > { Ok (x) }"),
        "{out}"
    );
}

#[test]
fn values_are_checked() {
    let cases: &[(AttrKind, TokenStream, &str)] = &[
        (
            AttrKind::WithRetry,
            quote!(max_attempts = "3"),
            "`max_attempts` takes a number, not a string: write `max_attempts = 3`",
        ),
        (
            AttrKind::CircuitBreaker,
            quote!(failure_threshold = -2),
            "`failure_threshold` must be at least 1, found `-2`",
        ),
        (
            AttrKind::CircuitBreaker,
            quote!(failure_rate = 0),
            "`failure_rate` is a ratio in (0, 1]",
        ),
        (
            AttrKind::CircuitBreaker,
            quote!(slow_call_rate = 1.5),
            "`slow_call_rate` is a ratio in (0, 1]",
        ),
        (
            AttrKind::WithRetry,
            quote!(multiplier = 0.5),
            "`multiplier` must be a finite number >= 1.0",
        ),
        (
            AttrKind::WithRetry,
            quote!(jitter = "fool"),
            "unknown jitter `fool`: expected one of `none`, `full`, `equal`, `decorrelated`",
        ),
        (
            AttrKind::WithRetry,
            quote!(jitter = full),
            "`jitter` takes a string: write `jitter = \"full\"`",
        ),
        (
            AttrKind::WithRetry,
            quote!(backoff = "square"),
            "unknown backoff `square`",
        ),
        (
            AttrKind::WithResilience,
            quote!(strategy = "wild"),
            "unknown strategy `wild`",
        ),
        (
            AttrKind::RateLimit,
            quote!(rate = "100 per s"),
            "invalid rate `100 per s`",
        ),
        (
            AttrKind::RateLimit,
            quote!(burst = 0),
            "`burst` must be at least 1",
        ),
        (
            AttrKind::Bulkhead,
            quote!(max_concurrent = 0),
            "`max_concurrent` must be at least 1",
        ),
        (
            AttrKind::WithRetry,
            quote!(service = 42),
            "`service` takes a string literal",
        ),
        (
            AttrKind::WithRetry,
            quote!(service = ""),
            "`service` cannot be empty",
        ),
        (
            AttrKind::WithRetry,
            quote!(crate = 5),
            "`crate` takes the path of the runtime crate",
        ),
        (
            AttrKind::CircuitBreaker,
            quote!(record_if = |e| true),
            "not a closure",
        ),
        (
            AttrKind::WithRetry,
            quote!(retry_if = "is_transient"),
            "`retry_if` takes a path, not a string",
        ),
        (
            AttrKind::WithRetry,
            quote!(max_attempts),
            "`max_attempts` needs a value: write `max_attempts = 3`",
        ),
        (
            AttrKind::WithResilience,
            quote!(retry = 3),
            "`retry` is a group of keys: write `retry(..)`",
        ),
        (
            AttrKind::WithRetry,
            quote!(3),
            "`#[with_retry]` takes `key = value` pairs",
        ),
        (AttrKind::Timeout, quote!(), "`#[timeout]` needs a duration"),
        (
            AttrKind::Timeout,
            quote!(5),
            "`#[timeout]` takes a string with a unit, not a bare number: write `#[timeout(\"5s\")]`",
        ),
        (
            AttrKind::Fallback,
            quote!(),
            "`#[fallback]` needs the path of a function",
        ),
        (
            AttrKind::Fallback,
            quote!(42),
            "`fallback` takes the path of a function",
        ),
        (AttrKind::Fallback, quote!(|e| Ok(1)), "not a closure"),
    ];
    for (kind, args, expected) in cases {
        let e = one_error(*kind, args.clone(), sync_fn());
        assert!(
            e.contains(expected),
            "{args}: got {e:?}, expected {expected:?}"
        );
    }
}

#[test]
fn keys_are_checked_together() {
    let cases: &[(AttrKind, TokenStream, &str)] = &[
        (
            AttrKind::CircuitBreaker,
            quote!(failure_threshold = 3, window = 10),
            "`failure_threshold` (consecutive mode) cannot be combined with `window` (rate mode)",
        ),
        (
            AttrKind::CircuitBreaker,
            quote!(window = 10, min_calls = 11),
            "`min_calls` = 11 is more than the window (10 calls)",
        ),
        (
            AttrKind::CircuitBreaker,
            quote!(strategy = "aggressive", min_calls = 11),
            "the `aggressive` strategy's window (10 calls)",
        ),
        (
            AttrKind::CircuitBreaker,
            quote!(window = "500ms"),
            "shorter than the shortest time window, `1s`",
        ),
        (
            AttrKind::CircuitBreaker,
            quote!(window = 2000000),
            "more than the largest window",
        ),
        (
            AttrKind::CircuitBreaker,
            quote!(cooldown = "30s", cooldown_max = "10s"),
            "`cooldown_max` (`10s`) is below `cooldown` (`30s`)",
        ),
        (
            AttrKind::CircuitBreaker,
            quote!(strategy = "aggressive", cooldown_max = "10s"),
            "the `aggressive` strategy's cooldown (`1m`)",
        ),
        (
            AttrKind::CircuitBreaker,
            quote!(cooldown = "0s"),
            "`cooldown` must be longer than `0s`",
        ),
        (
            AttrKind::CircuitBreaker,
            quote!(half_open_calls = 5000),
            "`half_open_calls` must be at most 4096",
        ),
        (
            AttrKind::WithRetry,
            quote!(delay = "2s", max_delay = "1s"),
            "`max_delay` (`1s`) is below `delay` (`2s`)",
        ),
        (
            AttrKind::WithRetry,
            quote!(max_delay = "10ms"),
            "the `balanced` strategy's delay (`100ms`)",
        ),
        (
            AttrKind::WithRetry,
            quote!(max_elapsed = "0s"),
            "`max_elapsed` must be longer than `0s`",
        ),
        (
            AttrKind::WithResilience,
            quote!(timeout = "1s"),
            "`timeout` needs an `async fn`",
        ),
        (
            AttrKind::Timeout,
            quote!(total_timeout = "1s"),
            "`total_timeout` needs an `async fn`",
        ),
    ];
    for (kind, args, expected) in cases {
        let e = one_error(*kind, args.clone(), sync_fn());
        assert!(
            e.contains(expected),
            "{args}: got {e:?}, expected {expected:?}"
        );
    }
    // A count window as large as the time window is fine, and a time window has no
    // `min_calls` limit.
    assert!(run(
        AttrKind::CircuitBreaker,
        quote!(window = "60s", min_calls = 100),
        sync_fn()
    )
    .0
    .is_empty());
    // A written delay above the preset's cap lifts the cap, as the runtime does.
    assert!(run(AttrKind::WithRetry, quote!(delay = "10s"), sync_fn())
        .0
        .is_empty());
    let e = one_error(AttrKind::Timeout, quote!("0ms"), async_fn());
    assert_eq!(e, "`timeout` must be longer than `0s`");
}

#[test]
fn stacked_attributes_merge_and_conflict() {
    let item = quote!(
        #[circuit_breaker(failure_threshold = 3)]
        #[doc = "kept"]
        #[resilience_runtime::timeout("1s")]
        #[fallback = Self::cached]
        async fn f(&self) -> Result<u32, E> {
            Ok(1)
        }
    );
    let (errors, out) = run(AttrKind::WithRetry, quote!(max_attempts = 2), item);
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(!out.contains("circuit_breaker ("), "{out}");
    assert!(!out.contains("fallback ="), "{out}");
    assert!(out.contains("doc = \"kept\""), "{out}");
    for field in [
        "breaker : true",
        "failure_threshold : :: core :: option :: Option :: Some (3u32)",
        "retry : true",
        "max_attempts : :: core :: option :: Option :: Some (2u32)",
        "timeout : :: core :: option :: Option :: Some (:: resilience_runtime :: __private :: Duration :: from_nanos (1000000000u64))",
        "call_fallback (Self :: cached",
    ] {
        assert!(out.contains(field), "{field} missing from {out}");
    }

    let same_twice = quote!(
        #[with_retry(delay = "1s")]
        fn f() -> Result<u32, E> {
            Ok(1)
        }
    );
    let e = one_error(AttrKind::WithRetry, quote!(max_attempts = 2), same_twice);
    assert!(
        e.starts_with("the retry is given twice: `#[with_retry]` already sets it"),
        "{e}"
    );

    // `#[with_resilience]` brings a breaker and a retry; a standalone one adds keys to
    // them unless its group is written too.
    let implicit = quote!(
        #[with_retry(max_attempts = 5)]
        #[circuit_breaker(failure_threshold = 2)]
        fn f() -> Result<u32, E> {
            Ok(1)
        }
    );
    assert!(run(AttrKind::WithResilience, quote!(), implicit)
        .0
        .is_empty());
    let explicit = quote!(
        #[with_retry(max_attempts = 5)]
        fn f() -> Result<u32, E> {
            Ok(1)
        }
    );
    let e = one_error(
        AttrKind::WithResilience,
        quote!(retry(delay = "1s")),
        explicit,
    );
    assert!(
        e.contains("`retry(..)` in `#[with_resilience]` already sets it"),
        "{e}"
    );

    let service_twice = quote!(
        #[with_retry(service = "b")]
        fn f() -> Result<u32, E> {
            Ok(1)
        }
    );
    let e = one_error(
        AttrKind::CircuitBreaker,
        quote!(service = "a"),
        service_twice,
    );
    assert_eq!(
        e,
        "`service` is given twice: name the service once, on one of the stacked attributes"
    );

    let fallback_twice = quote!(
        #[fallback = other]
        fn f() -> Result<u32, E> {
            Ok(1)
        }
    );
    let e = one_error(AttrKind::Fallback, quote!(cached), fallback_twice);
    assert!(e.starts_with("the fallback is given twice"), "{e}");

    // Attributes of other crates with the same name are not ours.
    let foreign = quote!(
        #[other_crate::timeout(5)]
        fn f() -> Result<u32, E> {
            Ok(1)
        }
    );
    let (errors, out) = run(AttrKind::WithRetry, quote!(), foreign);
    assert!(errors.is_empty());
    assert!(out.contains("other_crate :: timeout"));
}

#[test]
fn the_function_is_checked() {
    let cases: &[(TokenStream, &str)] = &[
        (
            quote!(
                const fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
            "cannot go on a `const fn`",
        ),
        (
            quote!(
                extern "C" fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
            "cannot go on an `extern` function",
        ),
        (
            quote!(
                fn f() -> u32 {
                    1
                }
            ),
            "`u32` is not a `Result`",
        ),
        (
            quote!(
                fn f() -> () {}
            ),
            "`()` is not a `Result`",
        ),
        (
            quote!(
                fn f() {}
            ),
            "this one returns nothing",
        ),
        (
            quote!(
                fn f() -> Option<u32> {
                    None
                }
            ),
            "`Option` is not a `Result`",
        ),
        (
            quote!(
                fn f() -> &'static str {
                    ""
                }
            ),
            "a reference is not a `Result`",
        ),
        (
            quote!(
                fn f() -> (u32, u32) {
                    (1, 2)
                }
            ),
            "a tuple is not a `Result`",
        ),
        (
            quote!(
                fn f() -> impl std::future::Future<Output = Result<(), E>> {
                    async { Ok(()) }
                }
            ),
            "write the function as an `async fn`",
        ),
        (
            quote!(
                fn f(&self) -> Result<u32, E>;
            ),
            "needs a function body",
        ),
        (
            quote!(
                struct S;
            ),
            "goes on a `fn` or `async fn`",
        ),
    ];
    for (item, expected) in cases {
        let e = one_error(AttrKind::WithRetry, quote!(), item.clone());
        assert!(
            e.contains(expected),
            "{item}: got {e:?}, expected {expected:?}"
        );
    }
    // Whatever is not plainly something else is left to the `ResultLike` bound.
    for item in [
        quote!(
            fn f() -> io::Result<u32> {
                Ok(1)
            }
        ),
        quote!(
            fn f() -> anyhow::Result<u32> {
                Ok(1)
            }
        ),
        quote!(
            fn f() -> MyAlias {
                Ok(1)
            }
        ),
    ] {
        assert!(run(AttrKind::WithRetry, quote!(), item).0.is_empty());
    }
}

#[test]
fn arguments_are_rebound_per_attempt() {
    let item = quote!(
        async fn f(
            &mut self,
            owned: String,
            r: &str,
            m: &mut u32,
            mut n: u32,
            (a, b): (u32, u32),
            unused: u8,
        ) -> Result<u32, E> {
            n += 1;
            *m += a + b + n;
            Ok(self.x + owned.len() as u32 + r.len() as u32)
        }
    );
    let (errors, out) = run(AttrKind::WithRetry, quote!(max_attempts = 3), item);
    assert!(errors.is_empty(), "{errors:#?}");
    // Signature: `mut` moves to the per-attempt binding, patterns are named.
    assert!(out.contains("async fn f (& mut self , owned : String , r : & str , m : & mut u32 , n : u32 , __resilience_arg5 : (u32 , u32) , unused : u8"), "{out}");
    assert!(
        out.contains("let __resilience_self = & mut * self ;"),
        "{out}"
    );
    assert!(
        out.contains("let __resilience_self = & mut * __resilience_self ;"),
        "{out}"
    );
    assert!(
        out.contains("let owned = :: resilience_runtime :: __private :: clone_arg (& owned)"),
        "{out}"
    );
    assert!(out.contains("let m = & mut * m ;"), "{out}");
    assert!(
        out.contains("let mut n = :: resilience_runtime :: __private :: clone_arg (& n)"),
        "{out}"
    );
    assert!(out.contains("let (a , b) = __resilience_arg5 ;"), "{out}");
    assert!(out.contains("__resilience_self . x"), "{out}");
    // Neither references nor arguments the body never names are cloned.
    assert!(!out.contains("clone_arg (& r)"), "{out}");
    assert!(!out.contains("clone_arg (& unused)"), "{out}");
    assert!(out.contains("loop"), "{out}");

    // Without a retry there is one attempt and no copy.
    let (errors, out) = run(AttrKind::CircuitBreaker, quote!(), sync_fn());
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(!out.contains("loop"), "{out}");
    assert!(!out.contains("clone_arg"), "{out}");
    assert!(out.contains("attempt_once_sync"), "{out}");
    assert!(out.contains("into_error ()"), "{out}");

    // `max_attempts = 1` is no retry.
    let (_, out) = run(AttrKind::WithRetry, quote!(max_attempts = 1), sync_fn());
    assert!(!out.contains("loop"), "{out}");
    assert!(
        !out.contains("into_error ()"),
        "a lone retry cannot reject: {out}"
    );
}

#[test]
fn self_is_renamed_only_where_it_is_the_receiver() {
    let item = quote!(
        fn f(&self) -> Result<u32, E> {
            struct Inner;
            impl Inner {
                fn get(&self) -> u32 {
                    self.0
                }
            }
            let c = || self.a;
            println!("{}", self.b);
            Ok(self::helper() + c())
        }
    );
    let (errors, out) = run(AttrKind::WithRetry, quote!(), item);
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(out.contains("fn get (& self) -> u32 { self . 0 }"), "{out}");
    assert!(out.contains("| | __resilience_self . a"), "{out}");
    assert!(
        out.contains("println ! (\"{}\" , __resilience_self . b)"),
        "{out}"
    );
    assert!(out.contains("self :: helper ()"), "{out}");
}

#[test]
fn service_names() {
    let (_, out) = run(AttrKind::WithRetry, quote!(service = "payments"), sync_fn());
    assert!(out.contains("SiteName :: Fixed (\"payments\")"), "{out}");
    assert!(!out.contains("__resilience_name"), "{out}");
    let (_, out) = run(AttrKind::WithRetry, quote!(), sync_fn());
    assert!(
        out.contains("SiteName :: Generated (__resilience_name)"),
        "{out}"
    );
    assert!(
        out.contains("type_name_of_val (& __resilience_name)"),
        "{out}"
    );
    let (_, out) = run(
        AttrKind::WithRetry,
        quote!(service = format!("t-{}", x)),
        sync_fn(),
    );
    assert!(out.contains("keyed (:: core :: convert :: AsRef :: < str > :: as_ref (& (format ! (\"t-{}\" , x))))"), "{out}");
    let (_, out) = run(AttrKind::WithRetry, quote!(crate = "my_rt"), sync_fn());
    assert!(out.contains("my_rt :: __private :: Site"), "{out}");
    assert!(!out.contains("resilience_runtime"), "{out}");
}

#[test]
fn async_trait_methods_are_wrapped_inside_the_box() {
    let item = quote!(
        fn load<'life0, 'async_trait>(
            &'life0 self,
            id: u32,
        ) -> ::core::pin::Pin<
            Box<
                dyn ::core::future::Future<Output = anyhow::Result<String>>
                    + ::core::marker::Send
                    + 'async_trait,
            >,
        >
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async move {
                let __self = self;
                let id = id;
                let __ret: anyhow::Result<String> = { Ok(format!("{}", id)) };
                __ret
            })
        }
    );
    let (errors, out) = run(AttrKind::WithResilience, quote!(timeout = "1s"), item);
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(
        out.contains("Box :: pin (async move { fn __resilience_name"),
        "{out}"
    );
    assert!(out.contains("let __self = __resilience_self ;"), "{out}");
    assert!(out.contains("< anyhow :: Result < String > as :: resilience_runtime :: __private :: ResultLike > :: Err"), "{out}");
}

#[test]
fn impl_trait_in_the_return_type_is_inferred() {
    let item = quote!(
        fn f() -> Result<impl Display, E> {
            Ok(1)
        }
    );
    let (errors, out) = run(AttrKind::WithRetry, quote!(), item);
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(out.contains("retry_sync :: < _ >"), "{out}");
    assert!(!out.contains("impl Display as"), "{out}");
}

#[test]
fn async_retry_runs_as_one_future_unless_an_argument_is_lent_mut() {
    // Owned and shared arguments: each attempt's copies and body from a closure,
    // every attempt in `Service::retry`'s future.
    let item = quote!(
        async fn f(&self, text: String, n: &u32) -> Result<u32, E> {
            Ok(self.0 + text.len() as u32 + *n)
        }
    );
    let (errors, out) = run(AttrKind::WithRetry, quote!(), item);
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(out.contains("__resilience_svc . retry :: <"), "{out}");
    assert!(
        out.contains(", _ , _ , _ > (__resilience_hooks , move | | {"),
        "{out}"
    );
    assert!(!out.contains(". total ("), "{out}");

    // A `&mut` argument (here the receiver) is lent to each attempt: the loop.
    for item in [
        quote!(
            async fn f(&mut self) -> Result<u32, E> {
                self.0 += 1;
                Ok(self.0)
            }
        ),
        quote!(
            async fn f(out: &mut Vec<u32>) -> Result<u32, E> {
                out.push(1);
                Ok(1)
            }
        ),
    ] {
        let (errors, out) = run(AttrKind::WithRetry, quote!(), item);
        assert!(errors.is_empty(), "{errors:#?}");
        assert!(
            out.contains("__resilience_svc . lend (__resilience_hooks)"),
            "{out}"
        );
        assert!(out.contains("__resilience_call . attempt :: <"), "{out}");
        assert!(!out.contains(". total ("), "{out}");
        assert!(!out.contains(". retry ::"), "{out}");
    }

    // A `&mut` argument the body does not use lends nothing.
    let item = quote!(
        async fn f(_unused: &mut Vec<u32>, n: u32) -> Result<u32, E> {
            Ok(n)
        }
    );
    let (errors, out) = run(AttrKind::WithRetry, quote!(), item);
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(out.contains("__resilience_svc . retry :: <"), "{out}");
}
