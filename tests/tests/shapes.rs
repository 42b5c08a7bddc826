//! Every function shape the attributes accept, observed working end to end.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use resilience_runtime::prelude::*;

#[derive(Debug, Clone, PartialEq)]
enum E {
    Boom,
    R(String),
}

impl From<ResilienceError> for E {
    fn from(e: ResilienceError) -> Self {
        E::R(e.to_string())
    }
}

static FREE_ASYNC_RUNS: AtomicU32 = AtomicU32::new(0);

#[with_retry(max_attempts = 3, delay = "10ms", jitter = "none")]
async fn free_async(fail_times: u32) -> Result<u32, E> {
    let n = FREE_ASYNC_RUNS.fetch_add(1, SeqCst);
    if n < fail_times {
        Err(E::Boom)
    } else {
        Ok(n)
    }
}

#[tokio::test(start_paused = true)]
async fn free_async_fn_retries_until_success() {
    assert_eq!(free_async(2).await, Ok(2));
    assert_eq!(FREE_ASYNC_RUNS.load(SeqCst), 3);
    let s = status(concat!(module_path!(), "::free_async")).expect("generated name");
    assert_eq!(
        (s.failures, s.successes, s.retries, s.calls),
        (2, 1, 2, 3),
        "every attempt's outcome is counted"
    );
}

static FREE_SYNC_RUNS: AtomicU32 = AtomicU32::new(0);

#[with_retry(max_attempts = 2, delay = "1ms")]
fn free_sync(always_fail: bool) -> Result<u32, E> {
    FREE_SYNC_RUNS.fetch_add(1, SeqCst);
    if always_fail {
        return Err(E::Boom);
    }
    Ok(1)
}

#[test]
fn free_sync_fn_retries_and_returns_last_error() {
    assert_eq!(free_sync(true), Err(E::Boom));
    assert_eq!(FREE_SYNC_RUNS.load(SeqCst), 2);
}

#[derive(Clone)]
struct Counter {
    runs: std::sync::Arc<AtomicU32>,
    total: u32,
}

impl Counter {
    #[with_retry(max_attempts = 3, delay = "1ms")]
    async fn by_ref(&self, fail_first: u32) -> Result<u32, E> {
        let n = self.runs.fetch_add(1, SeqCst);
        if n < fail_first {
            Err(E::Boom)
        } else {
            Ok(n)
        }
    }

    #[with_retry(max_attempts = 3, delay = "1ms")]
    async fn by_mut(&mut self, add: u32) -> Result<u32, E> {
        self.total += add;
        let n = self.runs.fetch_add(1, SeqCst);
        if n < 1 {
            Err(E::Boom)
        } else {
            Ok(self.total)
        }
    }

    #[with_retry(max_attempts = 2, delay = "1ms")]
    async fn by_value(self, label: String) -> Result<String, E> {
        let n = self.runs.fetch_add(1, SeqCst);
        if n < 1 {
            return Err(E::Boom);
        }
        Ok(format!("{label}:{}", self.total))
    }
}

fn counter() -> Counter {
    Counter {
        runs: std::sync::Arc::new(AtomicU32::new(0)),
        total: 0,
    }
}

#[tokio::test(start_paused = true)]
async fn ref_self_method_reuses_the_receiver() {
    let c = counter();
    assert_eq!(c.by_ref(2).await, Ok(2));
}

#[tokio::test(start_paused = true)]
async fn mut_self_method_sees_its_own_writes_across_attempts() {
    let mut c = counter();
    // Two attempts, each adding 5 to the same receiver.
    assert_eq!(c.by_mut(5).await, Ok(10));
    assert_eq!(c.total, 10);
}

#[tokio::test(start_paused = true)]
async fn value_self_method_gets_a_fresh_clone_per_attempt() {
    let c = counter();
    let runs = c.runs.clone();
    assert_eq!(c.by_value("x".to_owned()).await, Ok("x:0".to_owned()));
    assert_eq!(runs.load(SeqCst), 2);
}

#[derive(Debug, Clone, PartialEq)]
struct Owned(Vec<u8>);

static OWNED_SEEN: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

#[with_retry(max_attempts = 3, delay = "1ms")]
async fn consumes_owned(mut data: Owned) -> Result<usize, E> {
    data.0.push(1);
    let mut seen = OWNED_SEEN.lock().unwrap();
    seen.push(data.0.len());
    if seen.len() < 3 {
        Err(E::Boom)
    } else {
        Ok(data.0.len())
    }
}

#[tokio::test(start_paused = true)]
async fn owned_arguments_are_fresh_copies_each_attempt() {
    assert_eq!(consumes_owned(Owned(vec![0, 0])).await, Ok(3));
    // Each attempt started from the caller's value, not the previous attempt's.
    assert_eq!(*OWNED_SEEN.lock().unwrap(), vec![3, 3, 3]);
}

trait Store {
    async fn load(&self, key: &str) -> Result<String, E>;
}

struct MemStore;

impl Store for MemStore {
    #[circuit_breaker(failure_threshold = 2, cooldown = "1s")]
    async fn load(&self, key: &str) -> Result<String, E> {
        if key.is_empty() {
            Err(E::Boom)
        } else {
            Ok(key.to_uppercase())
        }
    }
}

#[tokio::test(start_paused = true)]
async fn trait_impl_async_fn_gets_a_breaker() {
    let s = MemStore;
    assert_eq!(s.load("a").await, Ok("A".to_owned()));
    assert_eq!(s.load("").await, Err(E::Boom));
    assert_eq!(s.load("").await, Err(E::Boom));
    assert!(matches!(s.load("a").await, Err(E::R(m)) if m.contains("is open")));
    let name = "<resilience_tests::shapes::MemStore as resilience_tests::shapes::Store>::load";
    let name = name.replace("resilience_tests::shapes", module_path!());
    assert_eq!(status(&name).map(|s| s.state), Some(CircuitState::Open));
}

#[with_retry(max_attempts = 2, delay = "1ms")]
async fn generic<'a, T, U: Clone>(items: &'a [T], extra: U) -> Result<(&'a T, U), E>
where
    T: PartialEq + std::fmt::Debug,
{
    items.first().map(|f| (f, extra)).ok_or(E::Boom)
}

#[tokio::test(start_paused = true)]
async fn generic_fn_with_lifetimes_and_where_clause() {
    let v = [3, 4];
    assert_eq!(generic(&v, "x").await, Ok((&3, "x")));
    assert_eq!(generic::<u8, _>(&[], 1).await, Err(E::Boom));
}

#[with_retry(max_attempts = 2, delay = "1ms")]
async fn impl_trait_arg(name: impl AsRef<str> + Clone) -> Result<usize, E> {
    Ok(name.as_ref().len())
}

#[tokio::test(start_paused = true)]
async fn impl_trait_argument() {
    assert_eq!(impl_trait_arg("four").await, Ok(4));
}

fn parse(s: &str) -> Result<u32, E> {
    s.parse().map_err(|_| E::Boom)
}

#[with_retry(max_attempts = 2, delay = "1ms")]
fn early_return_and_question_mark(s: &str) -> Result<u32, E> {
    if s == "zero" {
        return Ok(0);
    }
    let n = parse(s)?;
    Ok(n * 2)
}

#[test]
fn early_return_and_question_mark_work() {
    assert_eq!(early_return_and_question_mark("zero"), Ok(0));
    assert_eq!(early_return_and_question_mark("21"), Ok(42));
    assert_eq!(early_return_and_question_mark("x"), Err(E::Boom));
}

/// An async body that ends in a `return` (its value typed by the attribute's
/// annotation of the body), with `?` and an early return before it.
#[with_retry(max_attempts = 2, delay = "1ms")]
async fn async_early_return(s: &str) -> Result<u32, E> {
    if s == "zero" {
        return Ok(0);
    }
    let n = parse(s)?;
    #[allow(clippy::needless_return)]
    return Ok(n * 2);
}

/// A body that is one `return` (clippy would call the attribute's `let` of it a
/// diverging sub-expression, were the lint not off there).
#[with_retry(max_attempts = 2, delay = "1ms")]
async fn async_only_return(id: u32) -> Result<u32, E> {
    #[allow(clippy::needless_return)]
    return Ok(id);
}

/// The same without a retry (the lean future's body).
#[circuit_breaker(failure_threshold = 5)]
async fn async_diverging_tail(s: &str) -> Result<u32, E> {
    match s {
        "zero" => return Ok(0),
        _ => return parse(s).map(|n| n * 2),
    }
}

#[tokio::test(start_paused = true)]
async fn async_early_return_and_question_mark_work() {
    assert_eq!(async_early_return("zero").await, Ok(0));
    assert_eq!(async_early_return("21").await, Ok(42));
    assert_eq!(async_early_return("x").await, Err(E::Boom));
    assert_eq!(async_only_return(3).await, Ok(3));
    assert_eq!(async_diverging_tail("zero").await, Ok(0));
    assert_eq!(async_diverging_tail("4").await, Ok(8));
    assert_eq!(async_diverging_tail("x").await, Err(E::Boom));
}

#[tracing::instrument]
#[with_retry(max_attempts = 2, delay = "1ms")]
async fn instrumented(x: u32) -> Result<u32, E> {
    Ok(x + 1)
}

#[tokio::test(start_paused = true)]
async fn with_tracing_instrument() {
    assert_eq!(instrumented(1).await, Ok(2));
}

#[async_trait::async_trait]
trait Fetch {
    async fn fetch(&self, n: u32) -> Result<u32, E>;
}

struct Fetcher(AtomicU32);

#[async_trait::async_trait]
impl Fetch for Fetcher {
    #[with_retry(service = "shapes.async_trait", max_attempts = 3, delay = "1ms")]
    async fn fetch(&self, n: u32) -> Result<u32, E> {
        if self.0.fetch_add(1, SeqCst) < 2 {
            Err(E::Boom)
        } else {
            Ok(n)
        }
    }
}

#[tokio::test(start_paused = true)]
async fn inside_an_async_trait_impl() {
    let f = Fetcher(AtomicU32::new(0));
    assert_eq!(f.fetch(9).await, Ok(9));
    assert_eq!(status("shapes.async_trait").map(|s| s.retries), Some(2));
}

#[with_retry(max_attempts = 2, delay = "1ms")]
async fn anyhow_alias(fail: bool) -> anyhow::Result<u32> {
    if fail {
        anyhow::bail!("nope");
    }
    Ok(1)
}

#[with_retry(max_attempts = 2, delay = "1ms")]
fn io_alias(fail: bool) -> std::io::Result<u32> {
    if fail {
        return Err(std::io::Error::other("disk"));
    }
    Ok(7)
}

#[timeout("1s")]
async fn anyhow_timeout(wait: Duration) -> anyhow::Result<u32> {
    tokio::time::sleep(wait).await;
    Ok(7)
}

#[tokio::test(start_paused = true)]
async fn result_aliases_work() {
    assert_eq!(anyhow_alias(false).await.unwrap(), 1);
    assert_eq!(anyhow_alias(true).await.unwrap_err().to_string(), "nope");
    assert_eq!(io_alias(false).unwrap(), 7);
    assert_eq!(io_alias(true).unwrap_err().to_string(), "disk");
    assert_eq!(anyhow_timeout(Duration::from_millis(10)).await.unwrap(), 7);
    let e = anyhow_timeout(Duration::from_secs(5)).await.unwrap_err();
    assert!(
        matches!(
            e.downcast_ref::<ResilienceError>(),
            Some(ResilienceError::Timeout { .. })
        ),
        "{e}"
    );
}

/// A sync function with a retry: each attempt gets its own copy of an owned
/// argument (what one attempt did to its copy is not seen by the next), while a
/// `&mut` argument is lent to each attempt in turn (its changes accumulate).
#[with_retry(max_attempts = 3, delay = "1ms")]
fn sync_args_per_attempt(mut owned: Vec<u32>, seen: &mut Vec<usize>) -> Result<usize, E> {
    seen.push(owned.len());
    owned.push(0);
    if seen.len() < 3 {
        Err(E::Boom)
    } else {
        Ok(owned.len())
    }
}

#[test]
fn sync_retry_copies_owned_arguments_per_attempt_and_lends_mut_ones() {
    let mut seen = Vec::new();
    assert_eq!(sync_args_per_attempt(vec![7, 7], &mut seen), Ok(3));
    assert_eq!(
        seen,
        vec![2, 2, 2],
        "every attempt starts from the caller's value"
    );
}
