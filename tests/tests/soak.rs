//! Chaos soak: annotated functions (breaker + retry + timeout + bulkhead, one with a
//! rate limit and a total timeout, one with a computed service name and a fallback,
//! one sync) driven from many tasks on a 2-worker multi-thread runtime and from std
//! threads, with random failures, latencies (0-3 ms on the real clock) and
//! cancellations (`tokio::time::timeout` around calls, aborted tasks). At rest it
//! checks that the counters add up, that every rejection was counted once, that no
//! bulkhead slot and no half-open probe was lost, and that nothing panicked or hung.
//!
//! Short by default (~3 s); the long run:
//!
//! ```text
//! RESILIENCE_SOAK_SECS=300 cargo test --release -p resilience-tests --test soak -- --nocapture
//! ```
//!
//! - `RESILIENCE_SOAK_SECS`: how long the chaos runs (default 3).
//! - `RESILIENCE_SOAK_CALLS`: stop earlier, after this many calls in all (default: no
//!   limit).
//! - `RESILIENCE_SOAK_KEYS`: distinct computed service names in the key test
//!   (default 1,000,000; ~8 s in a debug build, ~3 s in release).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilience_runtime::prelude::*;
use resilience_runtime::{key_count, set_key_capacity, Policy, Resilience};

/// The soak and the key test both touch the registry's global key capacity and its
/// computed keys: they run one after the other.
static SERIAL: Mutex<()> = Mutex::new(());

#[derive(Debug, Clone, PartialEq)]
enum E {
    Boom,
    Ignored,
    R(ResilienceError),
}

impl From<ResilienceError> for E {
    fn from(e: ResilienceError) -> Self {
        E::R(e)
    }
}

fn is_ignored(e: &E) -> bool {
    *e == E::Ignored
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

// ---- randomness: a per-thread xorshift, seeded from the clock and the thread ----

fn random() -> u64 {
    thread_local!(static STATE: Cell<u64> = const { Cell::new(0) });
    STATE.with(|s| {
        let mut x = s.get();
        if x == 0 {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            x = (t ^ (s as *const Cell<u64> as u64).rotate_left(29)) | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

fn below(n: u64) -> u64 {
    random() % n
}

/// 0 ms 40%, 1 ms 30%, 2 ms 20%, 3 ms 10%.
fn latency() -> Duration {
    Duration::from_millis(match below(10) {
        0..=3 => 0,
        4..=6 => 1,
        7..=8 => 2,
        _ => 3,
    })
}

/// What the body does: Ok 70%, Boom 20%, Ignored 10%.
fn outcome() -> Result<u64, E> {
    match below(10) {
        0..=6 => Ok(1),
        7..=8 => Err(E::Boom),
        _ => Err(E::Ignored),
    }
}

// ---- what the bodies did ----

#[derive(Default)]
struct Bodies {
    entered: AtomicU64,
    ok: AtomicU64,
    err: AtomicU64,
    ignored: AtomicU64,
}

impl Bodies {
    const fn new() -> Self {
        Self {
            entered: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            err: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
        }
    }

    /// Counts what `r` is, right before the body returns it.
    fn done(&self, r: Result<u64, E>) -> Result<u64, E> {
        match &r {
            Ok(_) => &self.ok,
            Err(E::Ignored) => &self.ignored,
            Err(_) => &self.err,
        }
        .fetch_add(1, SeqCst);
        r
    }

    async fn run(&self, force_ok: bool) -> Result<u64, E> {
        self.entered.fetch_add(1, SeqCst);
        if force_ok {
            return self.done(Ok(1));
        }
        let d = latency();
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        } else if below(2) == 0 {
            tokio::task::yield_now().await;
        }
        self.done(outcome())
    }

    fn run_sync(&self, force_ok: bool) -> Result<u64, E> {
        self.entered.fetch_add(1, SeqCst);
        if force_ok {
            return self.done(Ok(1));
        }
        let d = latency();
        if !d.is_zero() {
            std::thread::sleep(d);
        }
        self.done(outcome())
    }

    fn get(&self) -> (u64, u64, u64, u64) {
        (
            self.entered.load(SeqCst),
            self.ok.load(SeqCst),
            self.err.load(SeqCst),
            self.ignored.load(SeqCst),
        )
    }
}

// ---- what the callers saw ----

#[derive(Default)]
struct Seen {
    calls: AtomicU64,
    ok: AtomicU64,
    circuit_open: AtomicU64,
    bulkhead_full: AtomicU64,
    rate_limited: AtomicU64,
    timeouts: AtomicU64,
    total_timeouts: AtomicU64,
    errors: AtomicU64,
    cancelled: AtomicU64,
}

impl Seen {
    fn record(&self, r: &Result<u64, E>) {
        self.calls.fetch_add(1, SeqCst);
        match r {
            Ok(_) => &self.ok,
            Err(E::R(ResilienceError::CircuitOpen { .. })) => &self.circuit_open,
            Err(E::R(ResilienceError::BulkheadFull { .. })) => &self.bulkhead_full,
            Err(E::R(ResilienceError::RateLimited { .. })) => &self.rate_limited,
            Err(E::R(ResilienceError::Timeout { after, .. })) => {
                if *after == TOTAL_TIMEOUT {
                    &self.total_timeouts
                } else {
                    &self.timeouts
                }
            }
            Err(_) => &self.errors,
        }
        .fetch_add(1, SeqCst);
    }

    fn rejections(&self) -> u64 {
        self.circuit_open.load(SeqCst)
            + self.bulkhead_full.load(SeqCst)
            + self.rate_limited.load(SeqCst)
    }
}

// ---- the services ----

static PLAIN: Bodies = Bodies::new();
static CANCELLED: Bodies = Bodies::new();
static SYNC: Bodies = Bodies::new();
const TENANTS: usize = 4;
static TENANT: [Bodies; TENANTS] = [Bodies::new(), Bodies::new(), Bodies::new(), Bodies::new()];
/// Rejections the tenants' fallback received, per tenant, and its runs.
static TENANT_FALLBACK_REJECTIONS: [AtomicU64; TENANTS] = [const { AtomicU64::new(0) }; TENANTS];
static TENANT_FALLBACK_RUNS: [AtomicU64; TENANTS] = [const { AtomicU64::new(0) }; TENANTS];
const FALLBACK_VALUE: u64 = 999;
const TOTAL_TIMEOUT: Duration = Duration::from_millis(8);

/// Never cancelled: its counters must match what callers saw exactly.
#[with_resilience(
    service = "soak.plain",
    circuit_breaker(
        failure_threshold = 4,
        cooldown = "20ms",
        half_open_calls = 2,
        success_threshold = 2,
        ignore_if = is_ignored
    ),
    retry(max_attempts = 3, delay = "1ms", max_delay = "4ms", jitter = "full"),
    timeout = "2ms",
    bulkhead(max_concurrent = 4, max_wait = "1ms")
)]
async fn plain(force_ok: bool) -> Result<u64, E> {
    PLAIN.run(force_ok).await
}

/// Cancelled at random (timeouts around calls, aborted tasks).
#[with_resilience(
    service = "soak.cancelled",
    circuit_breaker(
        failure_rate = 0.5,
        window = 20,
        min_calls = 10,
        cooldown = "15ms",
        ignore_if = is_ignored
    ),
    retry(max_attempts = 4, delay = "1ms", backoff = "linear", jitter = "equal"),
    timeout = "2ms",
    total_timeout = "8ms",
    bulkhead(max_concurrent = 3, max_wait = "2ms"),
    rate_limit(rate = "4/ms", burst = 6, max_wait = "1ms")
)]
async fn cancelled(force_ok: bool) -> Result<u64, E> {
    CANCELLED.run(force_ok).await
}

/// One breaker per tenant (a computed name), with a fallback.
#[with_resilience(
    service = format!("soak.tenant.{tenant}"),
    circuit_breaker(failure_threshold = 3, cooldown = "10ms", ignore_if = is_ignored),
    retry(max_attempts = 2, delay = "1ms"),
    timeout = "2ms",
    bulkhead(max_concurrent = 2, max_wait = "0ms")
)]
#[fallback = tenant_fallback]
async fn tenant_call(tenant: usize, force_ok: bool) -> Result<u64, E> {
    TENANT[tenant].run(force_ok).await
}

fn tenant_fallback(tenant: usize, _force_ok: bool, e: E) -> Result<u64, E> {
    TENANT_FALLBACK_RUNS[tenant].fetch_add(1, SeqCst);
    if let E::R(r) = &e {
        if r.is_rejection() {
            TENANT_FALLBACK_REJECTIONS[tenant].fetch_add(1, SeqCst);
        }
    }
    Ok(FALLBACK_VALUE)
}

/// Called from std threads.
#[with_resilience(
    service = "soak.sync",
    circuit_breaker(failure_threshold = 3, cooldown = "10ms", ignore_if = is_ignored),
    retry(max_attempts = 3, delay = "1ms", jitter = "full"),
    bulkhead(max_concurrent = 1, max_wait = "1ms")
)]
fn sync_call(force_ok: bool) -> Result<u64, E> {
    SYNC.run_sync(force_ok)
}

/// A caller refused by the breaker waits a little, as a real one would.
fn refused(r: &Result<u64, E>) -> bool {
    matches!(r, Err(E::R(ResilienceError::CircuitOpen { .. })))
}

async fn back_off(r: &Result<u64, E>) {
    if refused(r) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The registered service of `name` (a same-name builder returns the existing one).
fn service_of(name: &str) -> Policy {
    Resilience::builder(name).build().unwrap()
}

fn st(name: &str) -> ServiceStatus {
    status(name).unwrap_or_else(|| panic!("{name} is not registered"))
}

/// Tasks that were spawned and may have been aborted: at rest, none is left.
static LIVE_TASKS: AtomicUsize = AtomicUsize::new(0);

struct Live;
impl Live {
    fn new() -> Self {
        LIVE_TASKS.fetch_add(1, SeqCst);
        Live
    }
}
impl Drop for Live {
    fn drop(&mut self) {
        LIVE_TASKS.fetch_sub(1, SeqCst);
    }
}

struct Budget {
    until: std::time::Instant,
    calls_left: Option<AtomicU64>,
}

impl Budget {
    /// Whether another call may start.
    fn go(&self) -> bool {
        if std::time::Instant::now() >= self.until {
            return false;
        }
        match &self.calls_left {
            None => true,
            Some(n) => n.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok(),
        }
    }
}

fn summary(name: &str, seen: Option<&Seen>) {
    let s = st(name);
    let seen = seen.map_or(String::new(), |o| {
        format!(
            " | seen: calls {} ok {} rejected {} (open {} full {} limited {}) timeouts {}+{} total, cancelled {}",
            o.calls.load(SeqCst),
            o.ok.load(SeqCst),
            o.rejections(),
            o.circuit_open.load(SeqCst),
            o.bulkhead_full.load(SeqCst),
            o.rate_limited.load(SeqCst),
            o.timeouts.load(SeqCst),
            o.total_timeouts.load(SeqCst),
            o.cancelled.load(SeqCst),
        )
    });
    println!(
        "soak {name}: state {:?} outcomes {} (ok {} failed {} ignored {}) rejections {} timeouts {} retries {} fallbacks {}{seen}",
        s.state, s.calls, s.successes, s.failures, s.ignored, s.rejections, s.timeouts, s.retries, s.fallbacks
    );
}

#[test]
fn chaos_soak_counters_add_up_and_nothing_is_lost() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // The tenants' keys must not be evicted mid-soak (their counters would restart),
    // whatever keys the other tests of this binary left behind.
    let previous_capacity = set_key_capacity(usize::MAX);
    let secs = env_u64("RESILIENCE_SOAK_SECS").unwrap_or(3);
    let budget = Arc::new(Budget {
        until: std::time::Instant::now() + Duration::from_secs(secs),
        calls_left: env_u64("RESILIENCE_SOAK_CALLS").map(AtomicU64::new),
    });
    let seen_plain = Arc::new(Seen::default());
    let seen_cancelled = Arc::new(Seen::default());
    let seen_sync = Arc::new(Seen::default());
    let tenant_values = Arc::new(AtomicU64::new(0));
    let started = std::time::Instant::now();
    // Panics anywhere (also in aborted tasks, whose results nobody reads) are counted.
    static PANICS: AtomicU64 = AtomicU64::new(0);
    let default_hook = Arc::new(std::panic::take_hook());
    {
        let default_hook = default_hook.clone();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, SeqCst);
            default_hook(info);
        }));
    }

    // Sync callers on std threads.
    let stop_sync = Arc::new(AtomicBool::new(false));
    let sync_threads: Vec<_> = (0..2)
        .map(|_| {
            let (budget, seen, stop) = (budget.clone(), seen_sync.clone(), stop_sync.clone());
            std::thread::spawn(move || {
                while !stop.load(SeqCst) && budget.go() {
                    let r = sync_call(false);
                    seen.record(&r);
                    if refused(&r) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            })
        })
        .collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let run = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(secs + 60), async {
            let mut drivers = Vec::new();
            for _ in 0..6 {
                let (budget, seen) = (budget.clone(), seen_plain.clone());
                drivers.push(tokio::spawn(async move {
                    while budget.go() {
                        let r = plain(false).await;
                        seen.record(&r);
                        back_off(&r).await;
                    }
                }));
            }
            for _ in 0..6 {
                let (budget, seen) = (budget.clone(), seen_cancelled.clone());
                drivers.push(tokio::spawn(async move {
                    while budget.go() {
                        match below(4) {
                            0 => {
                                let r = cancelled(false).await;
                                seen.record(&r);
                                back_off(&r).await;
                            }
                            1 | 2 => {
                                let limit = Duration::from_micros(below(4_000));
                                match tokio::time::timeout(limit, cancelled(false)).await {
                                    Ok(r) => {
                                        seen.record(&r);
                                        back_off(&r).await;
                                    }
                                    Err(_) => {
                                        seen.cancelled.fetch_add(1, SeqCst);
                                    }
                                }
                            }
                            _ => {
                                let task = tokio::spawn(async {
                                    let _live = Live::new();
                                    cancelled(false).await
                                });
                                match below(3) {
                                    0 => {}
                                    1 => tokio::task::yield_now().await,
                                    _ => tokio::time::sleep(Duration::from_millis(below(3))).await,
                                }
                                task.abort();
                                // Dropped: whatever it returned (if it finished) is not seen.
                                drop(task);
                                seen.cancelled.fetch_add(1, SeqCst);
                            }
                        }
                    }
                }));
            }
            for _ in 0..4 {
                let (budget, values) = (budget.clone(), tenant_values.clone());
                drivers.push(tokio::spawn(async move {
                    while budget.go() {
                        let t = below(TENANTS as u64) as usize;
                        match tenant_call(t, false).await {
                            Ok(v) => {
                                values.fetch_add(v, SeqCst);
                                if v == FALLBACK_VALUE {
                                    tokio::time::sleep(Duration::from_millis(below(2))).await;
                                }
                            }
                            Err(e) => panic!("the fallback answers everything: {e:?}"),
                        }
                    }
                }));
            }
            for d in drivers {
                d.await.expect("no driver panicked");
            }
            // Rest: every aborted task is gone, every cooldown has passed.
            while LIVE_TASKS.load(SeqCst) != 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        })
        .await
    });
    stop_sync.store(true, SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !sync_threads.iter().all(|t| t.is_finished()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the sync callers finished (no deadlock)"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for t in sync_threads {
        t.join().expect("no sync caller panicked");
    }
    run.expect("the soak finished within its time limit (no deadlock)");
    let _ = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| default_hook(info)));
    assert_eq!(PANICS.load(SeqCst), 0, "nothing panicked");
    let chaos = started.elapsed();
    std::thread::sleep(Duration::from_millis(50));

    // -- no bulkhead slot lost --
    for (name, max) in [
        ("soak.plain", 4),
        ("soak.cancelled", 3),
        ("soak.sync", 1),
        ("soak.tenant.0", 2),
        ("soak.tenant.1", 2),
        ("soak.tenant.2", 2),
        ("soak.tenant.3", 2),
    ] {
        assert_eq!(
            service_of(name).service().bulkhead_available(),
            Some(max),
            "{name}: every bulkhead slot is back at rest"
        );
    }

    // -- counters add up --
    // Bodies that finished are recorded exactly (the outcome is recorded in the same
    // poll the body returns); a body cut by its timeout is a failure and a timeout.
    let check_outcomes = |name: &str, bodies: &Bodies, exact: bool| {
        let s = st(name);
        let (entered, ok, err, ignored) = bodies.get();
        assert_eq!(s.calls, s.successes + s.failures + s.ignored, "{name}");
        assert_eq!(
            s.successes, ok,
            "{name}: successes are the bodies that returned Ok"
        );
        assert_eq!(
            s.ignored, ignored,
            "{name}: ignored are the bodies that returned Ignored"
        );
        assert!(s.failures >= err, "{name}");
        let attempt_timeouts = s.failures - err;
        assert!(attempt_timeouts <= s.timeouts, "{name}");
        if exact {
            assert_eq!(s.calls, entered, "{name}: every body run has one outcome");
            assert_eq!(
                attempt_timeouts, s.timeouts,
                "{name}: every timeout was a failure"
            );
        } else {
            assert!(
                s.calls <= entered,
                "{name}: cancelled bodies have no outcome"
            );
        }
        s
    };
    let s = check_outcomes("soak.plain", &PLAIN, true);
    let o = &seen_plain;
    assert_eq!(
        s.rejections,
        o.rejections(),
        "soak.plain: each rejection counted once"
    );
    assert_eq!(o.rate_limited.load(SeqCst), 0);
    // Every attempt either ran its body or was rejected: attempts = calls + retries.
    assert_eq!(
        PLAIN.entered.load(SeqCst) + s.rejections,
        o.calls.load(SeqCst) + s.retries,
        "soak.plain: retries"
    );
    assert_eq!(
        o.calls.load(SeqCst),
        o.ok.load(SeqCst) + o.rejections() + o.timeouts.load(SeqCst) + o.errors.load(SeqCst)
    );

    let s = check_outcomes("soak.cancelled", &CANCELLED, false);
    let o = &seen_cancelled;
    assert!(
        o.rejections() <= s.rejections,
        "soak.cancelled: {} rejections seen, {} counted",
        o.rejections(),
        s.rejections
    );
    assert!(
        o.total_timeouts.load(SeqCst) <= s.timeouts - (s.failures - CANCELLED.err.load(SeqCst))
    );
    assert!(CANCELLED.entered.load(SeqCst) + s.rejections >= s.retries);

    let s = check_outcomes("soak.sync", &SYNC, true);
    let o = &seen_sync;
    assert_eq!(
        s.rejections,
        o.rejections(),
        "soak.sync: each rejection counted once"
    );
    assert_eq!(s.timeouts, 0);
    assert_eq!(
        SYNC.entered.load(SeqCst) + s.rejections,
        o.calls.load(SeqCst) + s.retries,
        "soak.sync: retries"
    );

    for (t, bodies) in TENANT.iter().enumerate() {
        let name = format!("soak.tenant.{t}");
        let s = check_outcomes(&name, bodies, true);
        assert_eq!(
            s.rejections,
            TENANT_FALLBACK_REJECTIONS[t].load(SeqCst),
            "{name}: every rejection went to the fallback and was counted once"
        );
        assert_eq!(s.fallbacks, TENANT_FALLBACK_RUNS[t].load(SeqCst), "{name}");
    }

    // -- no probe lost: after the cooldowns, every breaker admits probes and closes --
    let reopened = rt.block_on(async {
        let mut closed = Vec::new();
        for _ in 0..3 {
            assert_eq!(plain(true).await, Ok(1), "soak.plain admits its probes");
            assert_eq!(
                cancelled(true).await,
                Ok(1),
                "soak.cancelled admits its probes"
            );
            for t in 0..TENANTS {
                assert_eq!(
                    tenant_call(t, true).await,
                    Ok(1),
                    "soak.tenant.{t} admits its probes"
                );
            }
        }
        for name in ["soak.plain", "soak.cancelled"] {
            closed.push((name, st(name).state));
        }
        closed
    });
    for _ in 0..3 {
        assert_eq!(sync_call(true), Ok(1), "soak.sync admits its probes");
    }
    for (name, state) in reopened {
        assert_eq!(state, CircuitState::Closed, "{name}");
    }
    for t in 0..TENANTS {
        assert_eq!(st(&format!("soak.tenant.{t}")).state, CircuitState::Closed);
    }
    assert_eq!(st("soak.sync").state, CircuitState::Closed);

    println!(
        "soak: {secs}s of chaos ran {:.2?}; tenant values {}",
        chaos,
        tenant_values.load(SeqCst)
    );
    summary("soak.plain", Some(&seen_plain));
    summary("soak.cancelled", Some(&seen_cancelled));
    summary("soak.sync", Some(&seen_sync));
    for t in 0..TENANTS {
        summary(&format!("soak.tenant.{t}"), None);
    }
    let total: u64 = statuses()
        .iter()
        .filter(|s| s.service.starts_with("soak."))
        .map(|s| s.calls + s.rejections)
        .sum();
    println!("soak: {total} attempts in all");
    set_key_capacity(previous_capacity);
}

// ---- a million computed service names ----

#[circuit_breaker(service = format!("soak.key.{i}"), failure_threshold = 1, cooldown = "1s")]
fn keyed(i: u64) -> Result<u64, E> {
    Ok(i)
}

fn rss_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn a_million_computed_names_stay_within_the_key_capacity() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // 1M names take ~8 s in a debug build, ~3 s in release (2 threads).
    let keys = env_u64("RESILIENCE_SOAK_KEYS").unwrap_or(1_000_000);
    const CAP: usize = 10_000;
    let previous = set_key_capacity(CAP);
    let rss_before = rss_kib("VmRSS:");
    let started = std::time::Instant::now();
    let max_seen = Arc::new(AtomicUsize::new(0));
    let threads: u64 = 2;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let max_seen = max_seen.clone();
            std::thread::spawn(move || {
                let mut i = t;
                while i < keys {
                    assert_eq!(keyed(i), Ok(i));
                    if i % 1024 < threads {
                        max_seen.fetch_max(key_count(), SeqCst);
                    }
                    i += threads;
                }
            })
        })
        .collect();
    // A registry that stops making progress fails the test instead of hanging it.
    let limit = Duration::from_secs(60 + keys / 10_000);
    while !handles.iter().all(|h| h.is_finished()) {
        assert!(
            started.elapsed() < limit,
            "{keys} names not registered within {limit:?}: {} live keys",
            key_count()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for h in handles {
        h.join().unwrap();
    }
    let took = started.elapsed();
    let rss_after = rss_kib("VmRSS:");
    let live = key_count();
    println!(
        "soak keys: {keys} distinct names in {took:.2?} ({:.2} µs/name); live keys {live} \
         (max seen {}, cap {CAP}); RSS {:?} KiB -> {:?} KiB, peak {:?} KiB",
        took.as_secs_f64() * 1e6 / keys as f64,
        max_seen.load(SeqCst),
        rss_before,
        rss_after,
        rss_kib("VmHWM:"),
    );
    assert!(live <= CAP, "{live} live keys, above the cap of {CAP}");
    assert!(
        max_seen.load(SeqCst) <= CAP + 2 * threads as usize,
        "the count stays at the cap while names keep coming"
    );
    // The earliest keys were idle for long: evicted.
    for i in 0..1_000 {
        assert!(
            status(&format!("soak.key.{i}")).is_none(),
            "soak.key.{i} should have been evicted"
        );
    }
    // The most recent keys stay: 500 more from this thread alone, then look.
    for i in keys..keys + 500 {
        assert_eq!(keyed(i), Ok(i));
    }
    let recent = (keys..keys + 500)
        .filter(|i| status(&format!("soak.key.{i}")).is_some())
        .count();
    println!("soak keys: {recent} of the last 500 keys are live");
    assert!(recent >= 450, "only {recent} of the last 500 keys are live");
    assert!(key_count() <= CAP);
    // A fresh call of an evicted key works.
    assert_eq!(keyed(0), Ok(0));
    assert_eq!(
        st("soak.key.0").calls,
        1,
        "a re-registered key starts afresh"
    );
    set_key_capacity(previous);
}

#[circuit_breaker(service = format!("soak.small.{key}"), failure_threshold = 1, cooldown = "1h")]
fn small_cap_key(key: &str, fail: bool) -> Result<(), E> {
    if fail {
        Err(E::Boom)
    } else {
        Ok(())
    }
}

/// The eviction rules at a small cap, many times round: idle keys go, the newest and
/// an open breaker stay.
#[test]
fn a_small_key_capacity_evicts_idle_keys_but_never_an_open_breaker() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let previous = set_key_capacity(100);
    // Clear out keys of other tests, so that only this test's keys count.
    for i in 0..200 {
        small_cap_key(&format!("warmup.{i}"), false).unwrap();
    }
    assert_eq!(small_cap_key("open", true), Err(E::Boom));
    for i in 0..5_000 {
        small_cap_key(&i.to_string(), false).unwrap();
        assert!(key_count() <= 101, "{} keys live after {i}", key_count());
        if i % 5 == 0 {
            // A key used between any two sweeps (one per ~10 new keys) is never idle.
            small_cap_key("busy", false).unwrap();
        }
    }
    assert!(status("soak.small.4999").is_some(), "the newest key stays");
    assert!(
        status("soak.small.busy").is_some(),
        "a key used between sweeps stays"
    );
    for i in 0..1_000 {
        assert!(
            status(&format!("soak.small.{i}")).is_none(),
            "soak.small.{i} stays"
        );
    }
    assert_eq!(
        status("soak.small.open").map(|s| s.state),
        Some(CircuitState::Open),
        "an open breaker is never evicted"
    );
    set_key_capacity(previous);
}
