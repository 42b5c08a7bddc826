//! Every attribute and argument observed through the macros, under tokio's paused
//! clock.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use resilience_runtime::prelude::*;
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
enum E {
    Boom,
    Transient,
    Ignored,
    R(ResilienceError),
}

impl From<ResilienceError> for E {
    fn from(e: ResilienceError) -> Self {
        E::R(e)
    }
}

fn is_open(r: &Result<impl std::fmt::Debug, E>) -> bool {
    matches!(r, Err(E::R(ResilienceError::CircuitOpen { .. })))
}

fn counters(name: &str) -> (u64, u64, u64, u64, u64, u64, u64) {
    let s = status(name).expect("registered");
    (
        s.successes,
        s.failures,
        s.rejections,
        s.timeouts,
        s.retries,
        s.fallbacks,
        s.calls,
    )
}

/// A dependency scripted per call: 'S' ok, 'F' fail, 'H' hang 10 s, 'W' wait on the gate.
struct Dep {
    plan: std::sync::Mutex<Vec<u8>>,
    runs: AtomicU32,
    gate: Notify,
}

impl Dep {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            plan: std::sync::Mutex::new(Vec::new()),
            runs: AtomicU32::new(0),
            gate: Notify::new(),
        })
    }
    fn plan(&self, p: &str) {
        *self.plan.lock().unwrap() = p.bytes().rev().collect();
    }
    fn runs(&self) -> u32 {
        self.runs.load(SeqCst)
    }
    async fn step(&self) -> Result<u32, E> {
        let n = self.runs.fetch_add(1, SeqCst);
        let c = self.plan.lock().unwrap().pop().unwrap_or(b'S');
        match c {
            b'F' => Err(E::Boom),
            b'T' => Err(E::Transient),
            b'I' => Err(E::Ignored),
            b'H' => {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(n)
            }
            b'W' => {
                self.gate.notified().await;
                Ok(n)
            }
            _ => Ok(n),
        }
    }
}

struct Client {
    dep: Arc<Dep>,
}

impl Client {
    #[with_resilience(
        service = "e2e.combined",
        timeout = "1s",
        retry(max_attempts = 3, delay = "100ms", jitter = "none", backoff = "fixed"),
        circuit_breaker(failure_threshold = 4, cooldown = "30s"),
        bulkhead(max_concurrent = 1, max_wait = "0ms")
    )]
    #[fallback = Self::cached]
    async fn combined(&self) -> Result<u32, E> {
        self.dep.step().await
    }

    fn cached(&self, _e: E) -> Result<u32, E> {
        Ok(999)
    }
}

#[tokio::test(start_paused = true)]
async fn retry_breaker_timeout_bulkhead_and_fallback_on_one_method() {
    let c = Arc::new(Client { dep: Dep::new() });
    let name = "e2e.combined";

    // 1. success at once.
    assert_eq!(c.combined().await, Ok(0));
    assert_eq!(counters(name), (1, 0, 0, 0, 0, 0, 1));

    // 2. fail, then succeed on the retry after exactly 100 ms.
    c.dep.plan("FS");
    let t = Instant::now();
    assert_eq!(c.combined().await, Ok(2));
    assert_eq!(t.elapsed(), Duration::from_millis(100));
    assert_eq!(counters(name), (2, 1, 0, 0, 1, 0, 3));

    // 3. a hang times out after 1 s (a failure), the retry succeeds.
    c.dep.plan("HS");
    let t = Instant::now();
    assert_eq!(c.combined().await, Ok(4));
    assert_eq!(t.elapsed(), Duration::from_millis(1100));
    assert_eq!(counters(name), (3, 2, 0, 1, 2, 0, 5));

    // 4. the bulkhead (1 slot) is taken: a second call is rejected and the fallback answers.
    c.dep.plan("W");
    let c2 = c.clone();
    let held = tokio::spawn(async move { c2.combined().await });
    tokio::task::yield_now().await;
    assert_eq!(c.combined().await, Ok(999));
    assert_eq!(counters(name), (3, 2, 1, 1, 2, 1, 5));
    c.dep.gate.notify_one();
    assert_eq!(held.await.unwrap(), Ok(5));
    assert_eq!(counters(name), (4, 2, 1, 1, 2, 1, 6));

    // 5. four failures in a row (the consecutive run was reset by successes) open
    //    it: 3 attempts of one call, then the 4th failure trips it; the fallback answers.
    c.dep.plan("FFFF");
    assert_eq!(c.combined().await, Ok(999));
    assert_eq!(counters(name), (4, 5, 1, 1, 4, 2, 9));
    assert_eq!(
        c.combined().await,
        Ok(999),
        "the tripping call's error goes to the fallback"
    );
    assert_eq!(breaker(name).unwrap().state(), CircuitState::Open);
    let runs = c.dep.runs();
    // 6. open: rejected without running, not retried, fallback answers.
    assert_eq!(c.combined().await, Ok(999));
    assert_eq!(c.dep.runs(), runs);
    let s = status(name).unwrap();
    assert_eq!((s.rejections, s.fallbacks), (3, 4));
}

#[derive(Default)]
struct Ordered {
    runs: AtomicU32,
}

impl Ordered {
    #[with_retry(max_attempts = 2, delay = "10ms", jitter = "none")]
    #[circuit_breaker(service = "e2e.order.a", failure_threshold = 3, cooldown = "5s")]
    async fn retry_over_breaker(&self, fail: bool) -> Result<u32, E> {
        self.runs.fetch_add(1, SeqCst);
        if fail {
            Err(E::Boom)
        } else {
            Ok(1)
        }
    }

    #[circuit_breaker(service = "e2e.order.b", failure_threshold = 3, cooldown = "5s")]
    #[with_retry(max_attempts = 2, delay = "10ms", jitter = "none")]
    async fn breaker_over_retry(&self, fail: bool) -> Result<u32, E> {
        self.runs.fetch_add(1, SeqCst);
        if fail {
            Err(E::Boom)
        } else {
            Ok(1)
        }
    }
}

#[tokio::test(start_paused = true)]
async fn written_order_of_stacked_attributes_does_not_matter() {
    let (a, b) = (Ordered::default(), Ordered::default());
    let script = [false, true, true, false, true, true, true, false, false];
    // Each script runs from its own start, so both see the same times.
    let mut ra = Vec::new();
    for fail in script {
        ra.push(format!("{:?}", a.retry_over_breaker(fail).await).replace("e2e.order.a", "X"));
    }
    let mut rb = Vec::new();
    for fail in script {
        rb.push(format!("{:?}", b.breaker_over_retry(fail).await).replace("e2e.order.b", "X"));
    }
    assert_eq!(ra, rb);
    assert!(ra.last().unwrap().contains("CircuitOpen"), "{ra:?}");
    assert_eq!(a.runs.load(SeqCst), b.runs.load(SeqCst));
    let (sa, sb) = (
        status("e2e.order.a").unwrap(),
        status("e2e.order.b").unwrap(),
    );
    assert_eq!(
        (sa.state, sa.calls, sa.failures, sa.rejections, sa.retries),
        (sb.state, sb.calls, sb.failures, sb.rejections, sb.retries)
    );
    assert_eq!(sa.state, CircuitState::Open);
}

static RATE_RUNS: AtomicU32 = AtomicU32::new(0);

#[rate_limit(service = "e2e.rate", rate = "2/s", burst = 2)]
async fn limited() -> Result<u32, E> {
    Ok(RATE_RUNS.fetch_add(1, SeqCst))
}

#[rate_limit(service = "e2e.rate_wait", rate = "10/s", burst = 1, max_wait = "1s")]
async fn limited_wait() -> Result<(), E> {
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn rate_limit_rejects_with_the_wait_or_waits_for_it() {
    assert!(limited().await.is_ok());
    assert!(limited().await.is_ok());
    match limited().await {
        Err(E::R(ResilienceError::RateLimited { retry_after, .. })) => {
            assert_eq!(retry_after, Duration::from_millis(500))
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert_eq!(RATE_RUNS.load(SeqCst), 2);
    tokio::time::advance(Duration::from_millis(500)).await;
    assert!(limited().await.is_ok());

    let t = Instant::now();
    for _ in 0..3 {
        limited_wait().await.unwrap();
    }
    assert_eq!(t.elapsed(), Duration::from_millis(200));
}

#[bulkhead(service = "e2e.bulkhead", max_concurrent = 2, max_wait = "500ms")]
async fn bulkheaded(dep: Arc<Dep>) -> Result<u32, E> {
    dep.step().await
}

#[tokio::test(start_paused = true)]
async fn bulkhead_waits_up_to_max_wait() {
    let dep = Dep::new();
    dep.plan("WW");
    let h1 = tokio::spawn(bulkheaded(dep.clone()));
    let h2 = tokio::spawn(bulkheaded(dep.clone()));
    tokio::task::yield_now().await;
    let t = Instant::now();
    assert!(matches!(
        bulkheaded(dep.clone()).await,
        Err(E::R(ResilienceError::BulkheadFull { .. }))
    ));
    assert_eq!(t.elapsed(), Duration::from_millis(500));
    dep.gate.notify_one();
    assert!(h1.await.unwrap().is_ok());
    let third = tokio::spawn(bulkheaded(dep.clone()));
    tokio::task::yield_now().await;
    dep.gate.notify_waiters();
    let _ = h2.await.unwrap();
    assert!(third.await.unwrap().is_ok());
    assert_eq!(status("e2e.bulkhead").unwrap().rejections, 1);
}

#[with_resilience(
    service = "e2e.total",
    total_timeout = "250ms",
    retry(max_attempts = 10, delay = "100ms", jitter = "none", backoff = "fixed")
)]
async fn slow_total(dep: Arc<Dep>) -> Result<u32, E> {
    dep.step().await
}

#[tokio::test(start_paused = true)]
async fn total_timeout_bounds_retries_and_waits() {
    let dep = Dep::new();
    dep.plan("FFFFFFFF");
    let t = Instant::now();
    assert!(matches!(
        slow_total(dep.clone()).await,
        Err(E::R(ResilienceError::Timeout { .. }))
    ));
    assert_eq!(t.elapsed(), Duration::from_millis(250));
    assert_eq!(dep.runs(), 3);
    let s = status("e2e.total").unwrap();
    assert_eq!(
        (s.timeouts, s.failures),
        (1, 3),
        "the total timeout is not a breaker failure"
    );
}

fn ignore_ignored(e: &E) -> bool {
    matches!(e, E::Ignored)
}
fn only_boom(e: &E) -> bool {
    matches!(e, E::Boom)
}
fn transient(e: &E) -> bool {
    matches!(e, E::Transient)
}
fn hint(e: &E) -> Option<Duration> {
    matches!(e, E::Transient).then_some(Duration::from_secs(3))
}

#[with_resilience(
    service = "e2e.classify",
    retry(max_attempts = 3, delay = "10ms", max_delay = "20ms", jitter = "none", retry_if = transient, retry_after = hint),
    circuit_breaker(failure_threshold = 2, cooldown = "10s", record_if = only_boom, ignore_if = ignore_ignored)
)]
async fn classified(dep: Arc<Dep>) -> Result<u32, E> {
    dep.step().await
}

#[tokio::test(start_paused = true)]
async fn record_ignore_retry_if_and_retry_after() {
    let dep = Dep::new();
    // Transient: retried, waiting the 3 s hint (above max_delay), and recorded as a
    // success for the breaker (record_if only counts Boom).
    dep.plan("TS");
    let t = Instant::now();
    assert_eq!(classified(dep.clone()).await, Ok(1));
    assert_eq!(t.elapsed(), Duration::from_secs(3));
    // Boom: not retried (retry_if), recorded as a failure.
    dep.plan("F");
    assert_eq!(classified(dep.clone()).await, Err(E::Boom));
    // Ignored: neither, does not break the consecutive run.
    dep.plan("I");
    assert_eq!(classified(dep.clone()).await, Err(E::Ignored));
    dep.plan("F");
    assert_eq!(classified(dep.clone()).await, Err(E::Boom));
    let s = status("e2e.classify").unwrap();
    assert_eq!(
        (s.successes, s.failures, s.ignored, s.retries, s.state),
        (2, 2, 1, 1, CircuitState::Open)
    );
}

#[with_resilience(
    service = "e2e.slow",
    circuit_breaker(window = 2, slow_call = "1s", slow_call_rate = 1.0, cooldown = "5s"),
    retry(max_attempts = 1)
)]
async fn sometimes_slow(d: Duration) -> Result<(), E> {
    tokio::time::sleep(d).await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn slow_successes_open_the_breaker() {
    sometimes_slow(Duration::from_secs(2)).await.unwrap();
    sometimes_slow(Duration::from_secs(2)).await.unwrap();
    let s = status("e2e.slow").unwrap();
    assert_eq!(
        (s.slow_calls, s.failures, s.state),
        (2, 0, CircuitState::Open)
    );
    assert!(is_open(&sometimes_slow(Duration::ZERO).await));
}

#[with_resilience(
    service = "e2e.halfopen",
    circuit_breaker(
        failure_threshold = 1,
        cooldown = "2s",
        cooldown_max = "8s",
        half_open_calls = 1,
        success_threshold = 2
    ),
    retry(max_attempts = 1)
)]
async fn probed(dep: Arc<Dep>) -> Result<u32, E> {
    dep.step().await
}

#[tokio::test(start_paused = true)]
async fn half_open_probes_cooldown_growth_and_recovery() {
    let dep = Dep::new();
    dep.plan("F");
    assert_eq!(probed(dep.clone()).await, Err(E::Boom));
    assert!(is_open(&probed(dep.clone()).await));
    tokio::time::advance(Duration::from_secs(2)).await;
    dep.plan("F");
    assert_eq!(
        probed(dep.clone()).await,
        Err(E::Boom),
        "the failed probe reopens it"
    );
    match probed(dep.clone()).await {
        Err(E::R(ResilienceError::CircuitOpen { retry_after, .. })) => {
            assert_eq!(retry_after, Duration::from_secs(4))
        }
        other => panic!("{other:?}"),
    }
    tokio::time::advance(Duration::from_secs(4)).await;
    assert!(probed(dep.clone()).await.is_ok());
    assert_eq!(
        breaker("e2e.halfopen").unwrap().state(),
        CircuitState::HalfOpen
    );
    assert!(probed(dep.clone()).await.is_ok());
    assert_eq!(
        breaker("e2e.halfopen").unwrap().state(),
        CircuitState::Closed
    );
}

#[with_resilience(service = "e2e.strategy", strategy = "aggressive")]
async fn aggressive() -> Result<(), E> {
    Err(E::Boom)
}

#[tokio::test(start_paused = true)]
async fn strategy_preset_applies_its_values() {
    // aggressive: 2 attempts per call, window 10, min_calls 5, failure rate 0.25.
    for _ in 0..2 {
        assert_eq!(aggressive().await, Err(E::Boom));
    }
    // The 5th failure reaches min_calls and trips it; the retry is then rejected.
    assert!(is_open(&aggressive().await));
    let s = status("e2e.strategy").unwrap();
    assert_eq!(
        (s.failures, s.retries, s.rejections, s.state),
        (5, 3, 1, CircuitState::Open)
    );
    match aggressive().await {
        Err(E::R(ResilienceError::CircuitOpen { retry_after, .. })) => {
            assert!(
                retry_after > Duration::from_secs(59),
                "aggressive cooldown is 60s: {retry_after:?}"
            )
        }
        other => panic!("{other:?}"),
    }
}

struct Tenant {
    id: String,
}

impl Tenant {
    #[circuit_breaker(service = format!("e2e.tenant.{}", self.id), failure_threshold = 1, cooldown = "10s")]
    async fn call(&self, fail: bool) -> Result<(), E> {
        if fail {
            Err(E::Boom)
        } else {
            Ok(())
        }
    }
}

#[tokio::test(start_paused = true)]
async fn computed_service_names_give_each_key_its_own_breaker() {
    let (a, b) = (Tenant { id: "a".into() }, Tenant { id: "b".into() });
    assert_eq!(a.call(true).await, Err(E::Boom));
    assert!(is_open(&a.call(false).await));
    assert_eq!(b.call(false).await, Ok(()));
    assert_eq!(status("e2e.tenant.a").unwrap().state, CircuitState::Open);
    assert_eq!(status("e2e.tenant.b").unwrap().state, CircuitState::Closed);
}

struct Fallbacks;

impl Fallbacks {
    #[with_retry(service = "e2e.fb.sync_no_err", max_attempts = 2, delay = "1ms")]
    #[fallback = Self::fb_no_err]
    fn sync_no_err(&self, x: u32) -> Result<u32, E> {
        let _ = x;
        Err(E::Boom)
    }
    fn fb_no_err(&self, x: u32) -> Result<u32, E> {
        Ok(x + 100)
    }

    #[with_retry(service = "e2e.fb.async_err", max_attempts = 2, delay = "1ms")]
    #[fallback = Self::fb_async_err]
    async fn async_err(&self, x: String) -> Result<String, E> {
        let _ = &x;
        Err(E::Transient)
    }
    async fn fb_async_err(&self, x: String, e: E) -> Result<String, E> {
        tokio::task::yield_now().await;
        Ok(format!("{x}:{e:?}"))
    }
}

#[fallback(default_answer)]
async fn alone(x: u32) -> Result<u32, E> {
    let _ = x;
    Err(E::Boom)
}

async fn default_answer(x: u32, e: E) -> Result<u32, E> {
    assert_eq!(e, E::Boom);
    Ok(x * 10)
}

#[tokio::test(start_paused = true)]
async fn fallbacks_sync_async_with_and_without_the_error() {
    assert_eq!(Fallbacks.sync_no_err(1), Ok(101));
    assert_eq!(
        status("e2e.fb.sync_no_err").map(|s| (s.retries, s.fallbacks)),
        Some((1, 1))
    );
    assert_eq!(
        Fallbacks.async_err("k".into()).await,
        Ok("k:Transient".into())
    );
    assert_eq!(alone(4).await, Ok(40));
}

// ---- a retried call whose first attempt finds the breaker half-open ----

static HALF_OPEN_RUNS: AtomicU32 = AtomicU32::new(0);

#[with_resilience(
    service = "e2e.half_open_retry",
    circuit_breaker(failure_threshold = 1, cooldown = "1s"),
    retry(max_attempts = 2, delay = "10ms", jitter = "none")
)]
async fn half_open_retry() -> Result<u32, E> {
    HALF_OPEN_RUNS.fetch_add(1, SeqCst);
    Err(E::Boom)
}

#[tokio::test(start_paused = true)]
async fn a_first_attempt_that_finds_the_breaker_half_open_is_attempt_one() {
    let name = "e2e.half_open_retry";
    let retries = || status(name).map(|s| (s.retries, s.state));
    // Attempt 1 fails and opens the breaker; the retry's attempt is refused.
    assert!(is_open(&half_open_retry().await));
    assert_eq!(HALF_OPEN_RUNS.load(SeqCst), 1);
    assert_eq!(retries(), Some((1, CircuitState::Open)));
    // After the cooldown the first attempt is a probe. It is attempt 1 of 2, so its
    // failure is retried (and the retry refused by the reopened breaker).
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(is_open(&half_open_retry().await));
    assert_eq!(HALF_OPEN_RUNS.load(SeqCst), 2);
    assert_eq!(retries(), Some((2, CircuitState::Open)));
}

static HALF_OPEN_SYNC_RUNS: AtomicU32 = AtomicU32::new(0);

#[with_resilience(
    service = "e2e.half_open_retry_sync",
    circuit_breaker(failure_threshold = 1, cooldown = "1s"),
    retry(max_attempts = 2, delay = "0ms", jitter = "none")
)]
fn half_open_retry_sync() -> Result<u32, E> {
    HALF_OPEN_SYNC_RUNS.fetch_add(1, SeqCst);
    Err(E::Boom)
}

/// Sync calls made inside a runtime with a paused clock read that clock.
#[tokio::test(start_paused = true)]
async fn a_sync_first_attempt_that_finds_the_breaker_half_open_is_attempt_one() {
    let name = "e2e.half_open_retry_sync";
    let retries = || status(name).map(|s| (s.retries, s.state));
    assert!(is_open(&half_open_retry_sync()));
    assert_eq!(HALF_OPEN_SYNC_RUNS.load(SeqCst), 1);
    assert_eq!(retries(), Some((1, CircuitState::Open)));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(is_open(&half_open_retry_sync()));
    assert_eq!(HALF_OPEN_SYNC_RUNS.load(SeqCst), 2);
    assert_eq!(retries(), Some((2, CircuitState::Open)));
}
